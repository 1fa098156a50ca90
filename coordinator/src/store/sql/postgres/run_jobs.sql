-- Jobs of run $1 passing the filter, in id order after $7 (keyset pagination; NULL: from the
-- start), at most $4 (NULL: all). Filters, each NULL for "any": state $2, shard keys $3 (an array),
-- worker name $5, failure class $6, sample-id prefix $8. The failed-jobs listing walks the
-- partial index jobs_failed_by_run; the others walk the primary key from the cursor (a plain
-- bound, not `$7 IS NULL OR …`, so even a generic plan starts the walk at the cursor). The bound
-- is repeated on job_specs: a merge join driven by its key would otherwise walk the specs of
-- every job before the cursor (the planner does not carry a range across the join).
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       job_specs.spec::text AS spec, jobs.failure_class, jobs.last_error, jobs.worker, jobs.result::text AS result, jobs.updated_at
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
JOIN job_specs ON job_specs.job_id = jobs.id
WHERE jobs.run_id = $1
  AND ($2::text IS NULL OR jobs.state = $2)
  AND ($3::text[] IS NULL OR shards.key = ANY($3))
  AND ($5::text IS NULL OR jobs.worker = $5)
  AND ($6::text IS NULL OR jobs.failure_class = $6)
  AND jobs.id > COALESCE($7::bigint, -1)
  AND job_specs.job_id > COALESCE($7::bigint, -1)
  AND ($8::text IS NULL OR left(jobs.sample_id, length($8)) = $8)
ORDER BY jobs.id
LIMIT $4
