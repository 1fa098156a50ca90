-- Claims the jobs picked by lease_candidates.sql ($4: a JSON array of ids); mirrors state::claim.
UPDATE jobs
SET state = 'leased',
    attempt = attempt + 1,
    leased_by = $1,
    worker = $5,
    lease_expires_at = $2,
    updated_at = $3
WHERE id IN (SELECT value FROM json_each($4))
  AND state = 'queued'
RETURNING id, run_id, shard_id, attempt, sample_id, spec
