-- Jobs of run $1 passing the filter, in id order after $7 (keyset pagination; NULL: from the
-- start), at most $4 (-1: all). Filters, each NULL for "any": state $2, shard keys $3 (a JSON
-- array), worker name $5, failure class $6, sample-id prefix $8.
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       jobs.spec, jobs.failure_class, jobs.last_error, jobs.worker, jobs.result, jobs.updated_at
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.run_id = $1
  AND ($2 IS NULL OR jobs.state = $2)
  AND ($3 IS NULL OR shards.key IN (SELECT value FROM json_each($3)))
  AND ($5 IS NULL OR jobs.worker = $5)
  AND ($6 IS NULL OR jobs.failure_class = $6)
  AND jobs.id > COALESCE($7, -1)
  AND ($8 IS NULL OR substr(jobs.sample_id, 1, length($8)) = $8)
ORDER BY jobs.id
LIMIT $4
