-- Claims up to $3 jobs for worker $1 holding bundle $2, in one statement (DESIGN §3; mirrors
-- state::claim). Per active run with the bundle, the lateral subquery takes that run's oldest
-- queued jobs whose backoff has passed, locking them with SKIP LOCKED so concurrent claims take
-- disjoint jobs instead of waiting; the outer query keeps the best $3 by run priority, then age.
-- Walking runs first keeps a paused or other-bundle run with a million queued jobs from being
-- scanned. Rows locked but not kept are released when the statement ends.
-- $4 = now, $5 = lease expiry, $6 = the worker's name: a run that quarantined it is skipped
-- (quarantine.rs). A job whose last attempt failed on this worker ($1) is left to other workers
-- until its `others_until`. `worker` keeps the name after the attempt ends (job listing).
WITH picked AS (
    SELECT candidate.id, runs.priority
    FROM runs
    CROSS JOIN LATERAL (
        SELECT jobs.id
        FROM jobs
        -- The range (not `=`) and the ORDER BY both name the index's columns, so the planner
        -- walks jobs_queued_by_run in order whatever the statistics say (none right after a big
        -- insert; stale ones make an `=` plan walk the primary key past every finished job).
        WHERE jobs.run_id >= runs.id AND jobs.run_id <= runs.id
          AND jobs.state = 'queued'
          AND jobs.not_before <= $4
          AND (jobs.failed_by IS DISTINCT FROM $1 OR jobs.others_until <= $4)
        ORDER BY jobs.run_id, jobs.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    WHERE runs.state = 'active'
      AND runs.bundle_sha256 = $2
      AND NOT EXISTS (
          SELECT 1 FROM run_workers
          WHERE run_workers.run_id = runs.id AND run_workers.worker = $6 AND run_workers.quarantined_at IS NOT NULL
      )
    ORDER BY runs.priority DESC, candidate.id
    LIMIT $3
)
UPDATE jobs
SET state = 'leased',
    attempt = jobs.attempt + 1,
    leased_by = $1,
    worker = $6,
    lease_expires_at = $5,
    updated_at = $4
FROM picked
JOIN job_specs ON job_specs.job_id = picked.id
WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.run_id, jobs.shard_id, jobs.attempt, jobs.sample_id, job_specs.spec::text AS spec, picked.priority
