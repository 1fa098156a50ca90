-- Claims up to $3 jobs for worker $1 holding bundle $2, in one statement (DESIGN §3; mirrors
-- state::claim). Per active run with the bundle, the lateral subquery takes that run's oldest
-- queued jobs whose backoff has passed, locking them with SKIP LOCKED so concurrent claims take
-- disjoint jobs instead of waiting; the outer query keeps the best $3 by run priority, then age.
-- Walking runs first keeps a paused or other-bundle run with a million queued jobs from being
-- scanned. Rows locked but not kept are released when the statement ends.
-- $4 = now, $5 = lease expiry.
WITH picked AS (
    SELECT candidate.id, runs.priority
    FROM runs
    CROSS JOIN LATERAL (
        SELECT jobs.id
        FROM jobs
        WHERE jobs.run_id = runs.id
          AND jobs.state = 'queued'
          AND jobs.not_before <= $4
        ORDER BY jobs.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    WHERE runs.state = 'active'
      AND runs.bundle_sha256 = $2
    ORDER BY runs.priority DESC, candidate.id
    LIMIT $3
)
UPDATE jobs
SET state = 'leased',
    attempt = jobs.attempt + 1,
    leased_by = $1,
    lease_expires_at = $5,
    updated_at = $4
FROM picked
WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.run_id, jobs.shard_id, jobs.attempt, jobs.sample_id, jobs.spec, picked.priority
