-- Job counts by state, kept up to date by the statements that change job states, so run and shard
-- status, the metrics and the dashboard never count the jobs table. One row per (run, shard,
-- state, stripe). The stripe is the writing connection (`pg_backend_pid() % 16`), not the job:
-- one lease takes consecutive jobs of one shard, so striping by job would send every claim to the
-- same rows, while concurrent transactions run on different connections and so write different
-- rows. A stripe's number may go negative (a job counted in by one connection and out by
-- another); the sum over stripes is exact. `last_change`: when a job last entered this state
-- through this stripe (NULL on a row that only ever counted jobs out).
--
-- Jobs are deleted only with their shard (a forced resubmit deletes the run), and the shard's rows
-- here go with it, so deletions need no trigger.
CREATE TABLE state_counts (
    run_id BIGINT NOT NULL,
    shard_id BIGINT NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    stripe SMALLINT NOT NULL,
    jobs BIGINT NOT NULL,
    last_change TIMESTAMPTZ,
    PRIMARY KEY (run_id, shard_id, state, stripe)
);

-- Statement-level triggers see every row a statement changed at once (transition tables), so a
-- claim of 256 jobs is one upsert per (shard, state) it touched, not 256. Rows are written in key
-- order, and every transaction that moves jobs does so in one statement, so two transactions on
-- one stripe wait for each other but never deadlock. A statement that changes no state (a
-- heartbeat) nets to zero and writes nothing.
CREATE FUNCTION count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_counts AS counts (run_id, shard_id, state, stripe, jobs, last_change)
    SELECT run_id, shard_id, state, (pg_backend_pid() % 16)::smallint, count(*), max(updated_at)
    FROM inserted
    GROUP BY run_id, shard_id, state
    ORDER BY run_id, shard_id, state
    ON CONFLICT (run_id, shard_id, state, stripe) DO UPDATE
    SET jobs = counts.jobs + EXCLUDED.jobs, last_change = GREATEST(counts.last_change, EXCLUDED.last_change);
    RETURN NULL;
END
$$;

CREATE FUNCTION count_updated_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_counts AS counts (run_id, shard_id, state, stripe, jobs, last_change)
    SELECT run_id, shard_id, state, (pg_backend_pid() % 16)::smallint, sum(delta), max(changed_at)
    FROM (
        SELECT run_id, shard_id, state, count(*) AS delta, max(updated_at) AS changed_at FROM after_rows GROUP BY run_id, shard_id, state
        UNION ALL
        SELECT run_id, shard_id, state, -count(*), NULL FROM before_rows GROUP BY run_id, shard_id, state
    ) AS changes
    GROUP BY run_id, shard_id, state
    HAVING sum(delta) <> 0
    ORDER BY run_id, shard_id, state
    ON CONFLICT (run_id, shard_id, state, stripe) DO UPDATE
    SET jobs = counts.jobs + EXCLUDED.jobs, last_change = GREATEST(counts.last_change, EXCLUDED.last_change);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_jobs();
CREATE TRIGGER jobs_count_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_updated_jobs();

-- The jobs already there.
INSERT INTO state_counts (run_id, shard_id, state, stripe, jobs, last_change)
SELECT run_id, shard_id, state, 0, count(*), max(updated_at) FROM jobs GROUP BY run_id, shard_id, state;
