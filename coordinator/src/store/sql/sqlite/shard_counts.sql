-- Jobs per (shard, state) of run $1, from which run and shard status are derived, and when a job
-- of the run last changed state (for a finished run: when its last job ended). Read from the
-- state counters (the state_counts migration), never by counting jobs.
SELECT shard_id, state, CAST(sum(jobs) AS BIGINT) AS jobs, max(last_change) AS last_change
FROM state_counts
WHERE run_id = $1
GROUP BY shard_id, state
