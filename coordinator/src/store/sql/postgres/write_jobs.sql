-- Writes back a batch of decisions (store::JobWrite), one array element per job. Every decision
-- leaves the leased state, so the lease columns are cleared; NULL elements keep the old value.
-- New specs (resubmit) go to job_specs in write_specs.sql.
-- $9 = now. failed_by / others_until are set by a retryable failure and kept otherwise.
UPDATE jobs
SET state = w.state,
    lost = w.lost,
    not_before = COALESCE(w.not_before, jobs.not_before),
    leased_by = NULL,
    lease_expires_at = NULL,
    result = COALESCE(w.result::json, jobs.result),
    failure_class = COALESCE(w.failure_class, jobs.failure_class),
    last_error = COALESCE(w.last_error, jobs.last_error),
    attempt_base = COALESCE(w.attempt_base, jobs.attempt_base),
    failed_by = COALESCE(w.failed_by, jobs.failed_by),
    others_until = COALESCE(w.others_until, jobs.others_until),
    updated_at = $9
FROM unnest(
    $1::bigint[], $2::text[], $3::integer[], $4::timestamptz[], $5::text[],
    $6::text[], $7::text[], $8::integer[], $10::text[], $11::timestamptz[]
) AS w (id, state, lost, not_before, result, failure_class, last_error, attempt_base, failed_by, others_until)
WHERE jobs.id = w.id
