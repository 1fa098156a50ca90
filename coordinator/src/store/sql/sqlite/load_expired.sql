-- The leases that expired at or before $1.
SELECT id, state, attempt, attempt_base, lost, leased_by
FROM jobs
WHERE state = 'leased'
  AND lease_expires_at <= $1
ORDER BY id
