-- Jobs of run $1, optionally only in state $2 and shards $3 (an array of keys), at most $4 (NULL: all).
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       job_specs.spec::text AS spec, jobs.failure_class, jobs.last_error
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
JOIN job_specs ON job_specs.job_id = jobs.id
WHERE jobs.run_id = $1
  AND ($2::text IS NULL OR jobs.state = $2)
  AND ($3::text[] IS NULL OR shards.key = ANY($3))
ORDER BY jobs.id
LIMIT $4
