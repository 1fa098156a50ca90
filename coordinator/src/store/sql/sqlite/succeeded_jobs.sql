-- The succeeded jobs of run $1 with their results, for the manifest writer: in output-path order
-- (SQLite's default collation is bytewise), results that name no path last, then by id.
SELECT jobs.id, shards.key AS shard_key, jobs.sample_id, jobs.attempt, jobs.result
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.run_id = $1
  AND jobs.state = 'succeeded'
ORDER BY json_extract(jobs.result, '$.output.path') IS NULL, json_extract(jobs.result, '$.output.path'), jobs.id
