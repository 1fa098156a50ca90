-- Cancels the unfinished jobs of run $1 (mirrors state::cancel); finished ones keep their state.
UPDATE jobs
SET state = 'cancelled',
    leased_by = NULL,
    lease_expires_at = NULL,
    updated_at = $2
WHERE run_id = $1
  AND state IN ('queued', 'leased')
