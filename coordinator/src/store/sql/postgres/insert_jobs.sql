-- Inserts the jobs of run $1 in one statement, in the order given (job ids are the age order the
-- claim follows), and their specs beside them (matched by sample id, unique within a run).
-- $5 = now: a new job is claimable at once.
WITH given AS (
    SELECT j.shard_id, j.sample_id, j.spec, j.n
    FROM unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS j (shard_id, sample_id, spec, n)
),
inserted AS (
    INSERT INTO jobs (run_id, shard_id, sample_id, not_before, updated_at)
    SELECT $1, given.shard_id, given.sample_id, $5, $5
    FROM given
    ORDER BY given.n
    RETURNING id, sample_id
)
INSERT INTO job_specs (job_id, spec)
SELECT inserted.id, given.spec::json
FROM inserted
JOIN given ON given.sample_id = inserted.sample_id
