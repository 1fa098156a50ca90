-- The jobs named in $1 (a JSON array of ids), as the committing coordinator needs them.
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       jobs.spec, jobs.failure_class, jobs.last_error, jobs.worker, jobs.result, jobs.updated_at
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.id IN (SELECT value FROM json_each($1))
ORDER BY jobs.id
