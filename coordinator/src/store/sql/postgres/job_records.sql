-- The jobs named in $1 (an array of ids), as the committing coordinator needs them.
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       job_specs.spec::text AS spec, jobs.failure_class, jobs.last_error, jobs.worker, jobs.result::text AS result, jobs.updated_at
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
JOIN job_specs ON job_specs.job_id = jobs.id
WHERE jobs.id = ANY($1)
ORDER BY jobs.id
