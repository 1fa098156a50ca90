-- The attempts of a job that did not succeed (a succeeded attempt is the job's `result`): one row
-- per failed, retried or lost attempt, written in the transaction that records the failure or the
-- lost lease, so the happy path writes nothing here. `worker`: the name that held the attempt.
-- `detail`: what the worker sent with its failure, as JSON ({"qa": [the QA checks of every try],
-- "log": [its last log lines for the job]}).
CREATE TABLE job_attempts (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker TEXT COLLATE "C",
    ended_at TIMESTAMPTZ NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('retried', 'failed', 'lost')),
    failure_class TEXT CHECK (failure_class IN ('retryable', 'permanent', 'qa')),
    message TEXT NOT NULL,
    detail JSON,
    PRIMARY KEY (job_id, attempt)
);
