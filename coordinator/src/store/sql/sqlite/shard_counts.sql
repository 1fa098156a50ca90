-- Jobs per (shard, state) of run $1, from which run and shard status are derived.
SELECT shard_id, state, count(*) AS jobs
FROM jobs
WHERE run_id = $1
GROUP BY shard_id, state
