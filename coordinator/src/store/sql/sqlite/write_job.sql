-- Writes back one decision (store::JobWrite). Every decision leaves the leased state, so the lease
-- columns are cleared; NULL arguments keep the old value. $10 = now; $11 / $12 = the worker whose
-- attempt failed retryably and until when the job is left to others (kept otherwise).
UPDATE jobs
SET state = $2,
    lost = $3,
    not_before = COALESCE($4, not_before),
    leased_by = NULL,
    lease_expires_at = NULL,
    result = COALESCE($5, result),
    failure_class = COALESCE($6, failure_class),
    last_error = COALESCE($7, last_error),
    attempt_base = COALESCE($8, attempt_base),
    spec = COALESCE($9, spec),
    failed_by = COALESCE($11, failed_by),
    others_until = COALESCE($12, others_until),
    updated_at = $10
WHERE id = $1
