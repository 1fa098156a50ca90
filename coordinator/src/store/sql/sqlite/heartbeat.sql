-- Extends one lease if worker $3 still holds attempt $2 of job $1 (mirrors state::extend).
UPDATE jobs
SET lease_expires_at = $4,
    updated_at = $5
WHERE id = $1
  AND attempt = $2
  AND state = 'leased'
  AND leased_by = $3
