-- Extends the leases worker $3 still holds, by (job, attempt) pairs $1/$2, to $4 (mirrors
-- state::extend: leased, current attempt, same holder). Returns the ones extended.
UPDATE jobs
SET lease_expires_at = $4,
    updated_at = $5
FROM unnest($1::bigint[], $2::integer[]) AS held (id, attempt)
WHERE jobs.id = held.id
  AND jobs.attempt = held.attempt
  AND jobs.state = 'leased'
  AND jobs.leased_by = $3
RETURNING jobs.id, jobs.attempt
