-- Locks the named jobs for a batch decision (complete, fail, resubmit). Id order, so two batches
-- naming the same jobs lock them in the same order and cannot deadlock.
SELECT id, state, attempt, attempt_base, lost, leased_by
FROM jobs
WHERE id = ANY($1)
ORDER BY id
FOR UPDATE
