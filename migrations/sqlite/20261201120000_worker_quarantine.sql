-- Bad-worker quarantine and the retry's preference for another worker; see the Postgres migration
-- of the same name.
CREATE TABLE run_workers (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    errors TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(errors)),
    quarantined_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, worker)
);
ALTER TABLE jobs ADD COLUMN failed_by TEXT;
ALTER TABLE jobs ADD COLUMN others_until TEXT;
