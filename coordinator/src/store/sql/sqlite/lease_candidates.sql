-- The jobs a claim takes (run inside BEGIN IMMEDIATE, so no other writer runs between this and
-- the update): queued, backoff passed, of an active run with bundle $1, best run priority first,
-- then oldest. $2 = now, $3 = how many.
SELECT jobs.id, runs.priority
FROM jobs
JOIN runs ON runs.id = jobs.run_id
WHERE jobs.state = 'queued'
  AND jobs.not_before <= $2
  AND runs.state = 'active'
  AND runs.bundle_sha256 = $1
ORDER BY runs.priority DESC, jobs.id
LIMIT $3
