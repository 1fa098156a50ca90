-- Bad-worker quarantine (coordinator::quarantine). One row per run and worker *name* (stable
-- across worker restarts): its retryable failures in a row, the newest of their messages (a JSON
-- array of strings), and when it was quarantined (NULL: it may lease the run's jobs). The claim
-- skips a run whose row for the asking worker is quarantined.
CREATE TABLE run_workers (
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker TEXT COLLATE "C" NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    errors JSON NOT NULL DEFAULT '[]',
    quarantined_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, worker)
);
CREATE INDEX run_workers_quarantined ON run_workers (run_id, worker) WHERE quarantined_at IS NOT NULL;
-- The worker (registration id) whose attempt last failed retryably, and until when the claim
-- offers the job only to other workers (one more backoff after the retry's), so one bad node does
-- not use up all of a job's attempts while healthy workers are there to take it.
ALTER TABLE jobs ADD COLUMN failed_by TEXT, ADD COLUMN others_until TIMESTAMPTZ;
