-- Inserts the jobs of run $1 in one statement, in the order given (job ids are the age order the
-- claim follows). $5 = now: a new job is claimable at once.
INSERT INTO jobs (run_id, shard_id, sample_id, spec, not_before, updated_at)
SELECT $1, j.shard_id, j.sample_id, j.spec::jsonb, $5, $5
FROM unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS j (shard_id, sample_id, spec, n)
ORDER BY j.n
