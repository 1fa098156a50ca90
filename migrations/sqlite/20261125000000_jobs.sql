-- Runs, shards and jobs for embedded mode; the same shape as the Postgres schema. Job states are
-- the text of acufarm_core::JobState::as_str. Timestamps are UTC text of one fixed width
-- (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), so comparing the text compares the times. JSON is checked text.

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'cancelled')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE shards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    UNIQUE (run_id, key)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    shard_id INTEGER NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    sample_id TEXT NOT NULL,
    spec TEXT NOT NULL CHECK (json_valid(spec)),
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    attempt_base INTEGER NOT NULL DEFAULT 0 CHECK (attempt_base <= attempt),
    lost INTEGER NOT NULL DEFAULT 0 CHECK (lost >= 0),
    not_before TEXT NOT NULL,
    leased_by TEXT,
    lease_expires_at TEXT,
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    failure_class TEXT CHECK (failure_class IN ('retryable', 'permanent', 'qa')),
    last_error TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (run_id, sample_id),
    CHECK ((state = 'leased') = (leased_by IS NOT NULL AND lease_expires_at IS NOT NULL))
);

CREATE INDEX jobs_queued_by_run ON jobs (run_id, id) WHERE state = 'queued';
CREATE INDEX jobs_leased_by_expiry ON jobs (lease_expires_at) WHERE state = 'leased';
CREATE INDEX jobs_by_shard_state ON jobs (shard_id, state);
