-- The leases that expired at or before $1, with the lost-lease cap of each job's run.
SELECT jobs.id, jobs.state, jobs.attempt, jobs.attempt_base, jobs.lost, jobs.leased_by, runs.max_lost
FROM jobs
JOIN runs ON runs.id = jobs.run_id
WHERE jobs.state = 'leased'
  AND jobs.lease_expires_at <= $1
ORDER BY jobs.id
