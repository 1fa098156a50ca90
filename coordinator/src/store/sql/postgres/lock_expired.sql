-- Locks the leases that expired at or before $1, with the lost-lease cap of each job's run, so
-- one statement serves every run under its own policy (the join is a primary-key probe per
-- expired lease; leased jobs are few). SKIP LOCKED: a job a worker is completing right now is
-- left to that transaction, and a second reaper replica takes the rest.
SELECT jobs.id, jobs.state, jobs.attempt, jobs.attempt_base, jobs.lost, jobs.leased_by, runs.max_lost
FROM jobs
JOIN runs ON runs.id = jobs.run_id
WHERE jobs.state = 'leased'
  AND jobs.lease_expires_at <= $1
ORDER BY jobs.id
FOR UPDATE OF jobs SKIP LOCKED
