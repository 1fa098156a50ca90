-- Job counts by state per shard, kept by triggers in the transactions that change job states; see
-- the Postgres migration of the same name. SQLite has one writer, so one stripe (0), and row
-- triggers (it has no statement-level ones).
CREATE TABLE state_counts (
    run_id INTEGER NOT NULL,
    shard_id INTEGER NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    stripe INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    last_change TEXT,
    PRIMARY KEY (run_id, shard_id, state, stripe)
);

CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs
BEGIN
    INSERT INTO state_counts (run_id, shard_id, state, stripe, jobs, last_change)
    VALUES (NEW.run_id, NEW.shard_id, NEW.state, 0, 1, NEW.updated_at)
    ON CONFLICT (run_id, shard_id, state, stripe) DO UPDATE
    SET jobs = jobs + 1, last_change = max(coalesce(last_change, ''), excluded.last_change);
END;

CREATE TRIGGER jobs_count_updated AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state
BEGIN
    INSERT INTO state_counts (run_id, shard_id, state, stripe, jobs, last_change)
    VALUES (OLD.run_id, OLD.shard_id, OLD.state, 0, -1, NULL)
    ON CONFLICT (run_id, shard_id, state, stripe) DO UPDATE SET jobs = jobs - 1;
    INSERT INTO state_counts (run_id, shard_id, state, stripe, jobs, last_change)
    VALUES (NEW.run_id, NEW.shard_id, NEW.state, 0, 1, NEW.updated_at)
    ON CONFLICT (run_id, shard_id, state, stripe) DO UPDATE
    SET jobs = jobs + 1, last_change = max(coalesce(last_change, ''), excluded.last_change);
END;

INSERT INTO state_counts (run_id, shard_id, state, stripe, jobs, last_change)
SELECT run_id, shard_id, state, 0, count(*), max(updated_at) FROM jobs GROUP BY run_id, shard_id, state;
