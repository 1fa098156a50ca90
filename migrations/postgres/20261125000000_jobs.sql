-- Runs, shards and jobs: the truth of the farm (DESIGN §3). Job states are the text of
-- acufarm_core::JobState::as_str; timestamps are timestamptz (UTC).

CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'cancelled')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE shards (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    UNIQUE (run_id, key)
);

CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    shard_id BIGINT NOT NULL REFERENCES shards (id) ON DELETE CASCADE,
    sample_id TEXT NOT NULL,
    spec JSONB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    -- Claims so far: the fencing token. Only the claim increments it, and it never goes back.
    attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- attempt when the current retry budget began (moved forward by a resubmit).
    attempt_base INTEGER NOT NULL DEFAULT 0 CHECK (attempt_base <= attempt),
    -- Leases lost in the current budget; they do not use up attempts.
    lost INTEGER NOT NULL DEFAULT 0 CHECK (lost >= 0),
    -- Not claimable before this (retry backoff).
    not_before TIMESTAMPTZ NOT NULL,
    leased_by TEXT,
    lease_expires_at TIMESTAMPTZ,
    result JSONB,
    failure_class TEXT CHECK (failure_class IN ('retryable', 'permanent', 'qa')),
    last_error TEXT,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (run_id, sample_id),
    CHECK ((state = 'leased') = (leased_by IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim walks the active runs and, per run, its queued jobs in id order: this partial index
-- holds only queued jobs, so it stays small however many jobs are done, and paused runs cost
-- nothing.
CREATE INDEX jobs_queued_by_run ON jobs (run_id, id) WHERE state = 'queued';
-- The reaper looks only at leased jobs by expiry.
CREATE INDEX jobs_leased_by_expiry ON jobs (lease_expires_at) WHERE state = 'leased';
-- Shard status, and the cascade when a shard is deleted.
CREATE INDEX jobs_by_shard_state ON jobs (shard_id, state);
CREATE INDEX runs_active_by_priority ON runs (priority DESC, id) WHERE state = 'active';
