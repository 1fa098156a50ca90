-- The attempts of a job that did not succeed; see the Postgres migration of the same name.
CREATE TABLE job_attempts (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker TEXT,
    ended_at TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('retried', 'failed', 'lost')),
    failure_class TEXT CHECK (failure_class IN ('retryable', 'permanent', 'qa')),
    message TEXT NOT NULL,
    detail TEXT CHECK (detail IS NULL OR json_valid(detail)),
    PRIMARY KEY (job_id, attempt)
);
