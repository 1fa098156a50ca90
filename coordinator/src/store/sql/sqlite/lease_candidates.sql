-- The jobs a claim takes (run inside BEGIN IMMEDIATE, so no other writer runs between this and
-- the update): queued, backoff passed, of an active run with bundle $1, best run priority first,
-- then oldest. $2 = now, $3 = how many. Skips runs that quarantined the worker's name ($5), and
-- jobs whose last attempt failed on this worker ($4) until their `others_until` (see the
-- Postgres lease.sql).
SELECT jobs.id, runs.priority
FROM jobs
JOIN runs ON runs.id = jobs.run_id
WHERE jobs.state = 'queued'
  AND jobs.not_before <= $2
  AND runs.state = 'active'
  AND runs.bundle_sha256 = $1
  AND (jobs.failed_by IS NULL OR jobs.failed_by <> $4 OR jobs.others_until <= $2)
  AND NOT EXISTS (
      SELECT 1 FROM run_workers
      WHERE run_workers.run_id = runs.id AND run_workers.worker = $5 AND run_workers.quarantined_at IS NOT NULL
  )
ORDER BY runs.priority DESC, jobs.id
LIMIT $3
