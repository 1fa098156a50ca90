-- Jobs per (shard, state) of run $1, from which run and shard status are derived, and when the
-- last of them changed (for a finished run: when its last job ended).
SELECT shard_id, state, count(*) AS jobs, max(updated_at) AS last_change
FROM jobs
WHERE run_id = $1
GROUP BY shard_id, state
