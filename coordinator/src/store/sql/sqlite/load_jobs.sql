-- The named jobs ($1: a JSON array of ids) for a batch decision; the caller holds the write lock.
SELECT id, state, attempt, attempt_base, lost, leased_by
FROM jobs
WHERE id IN (SELECT value FROM json_each($1))
ORDER BY id
