-- Locks the leases that expired at or before $1. SKIP LOCKED: a job a worker is completing right
-- now is left to that transaction, and a second reaper replica takes the rest.
SELECT id, state, attempt, attempt_base, lost, leased_by
FROM jobs
WHERE state = 'leased'
  AND lease_expires_at <= $1
ORDER BY id
FOR UPDATE SKIP LOCKED
