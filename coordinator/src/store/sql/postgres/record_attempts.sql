-- Records ended attempts: $1 job ids, $2 now, $3 attempts, $4 outcomes, $5 failure classes,
-- $6 messages, $7 details (JSON text or NULL), one element per attempt. The worker is the name
-- the claim left on the job. An attempt is recorded once.
INSERT INTO job_attempts (job_id, attempt, worker, ended_at, outcome, failure_class, message, detail)
SELECT ended.job_id, ended.attempt, jobs.worker, $2, ended.outcome, ended.failure_class, ended.message, ended.detail::json
FROM unnest($1::bigint[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[])
    AS ended (job_id, attempt, outcome, failure_class, message, detail)
JOIN jobs ON jobs.id = ended.job_id
ON CONFLICT (job_id, attempt) DO NOTHING
