-- Jobs of run $1, optionally only in state $2 and shards $3 (a JSON array of keys), at most $4 (-1: all).
SELECT jobs.id, jobs.run_id, shards.key AS shard_key, jobs.sample_id, jobs.state, jobs.attempt, jobs.leased_by,
       jobs.spec, jobs.failure_class, jobs.last_error
FROM jobs
JOIN shards ON shards.id = jobs.shard_id
WHERE jobs.run_id = $1
  AND ($2 IS NULL OR jobs.state = $2)
  AND ($3 IS NULL OR shards.key IN (SELECT value FROM json_each($3)))
ORDER BY jobs.id
LIMIT $4
