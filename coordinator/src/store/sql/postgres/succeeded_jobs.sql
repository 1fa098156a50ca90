-- The succeeded jobs of run $1 with their results, for the manifest writer: in output-path order
-- (bytewise, as Rust compares strings), results that name no path last, then by id.
SELECT jobs.id, shards.key AS shard_key, jobs.sample_id, jobs.attempt, jobs.result::text AS result
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.run_id = $1
  AND jobs.state = 'succeeded'
ORDER BY (jobs.result -> 'output' ->> 'path') COLLATE "C" NULLS LAST, jobs.id
