-- The succeeded jobs of run $1 with their results, for the manifest writer.
SELECT jobs.id, shards.key AS shard_key, jobs.sample_id, jobs.attempt, jobs.result
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.run_id = $1
  AND jobs.state = 'succeeded'
ORDER BY jobs.id
