-- Keep the rows the queue churns narrow. PostgreSQL writes a whole new row version on every
-- claim, heartbeat and report, so a ~1.6 KB spec inside `jobs` was copied (and WAL-logged) on
-- each of them. Specs move to their own table, written when a run is created and only rewritten
-- by a resubmit; a `jobs` row is now ~150 bytes until its result is recorded.
-- Specs and results become `json` (checked text, returned as stored): nothing queries inside
-- them, and the coordinator reads and writes them as text, so `jsonb`'s parse on every write
-- and rebuild on every read bought nothing.
CREATE TABLE job_specs (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    spec JSON NOT NULL
);
INSERT INTO job_specs (job_id, spec) SELECT id, spec::json FROM jobs;
ALTER TABLE jobs DROP COLUMN spec;
ALTER TABLE jobs ALTER COLUMN result TYPE JSON USING result::json;
-- Sample ids compare bytewise: the unique (run_id, sample_id) index gains an entry on every
-- claim and report, and the database's linguistic collation made each comparison a strcoll.
ALTER TABLE jobs ALTER COLUMN sample_id TYPE TEXT COLLATE "C";
-- The jobs table is a queue: every job leaves two dead row versions behind, and the claim's walk
-- over jobs_queued_by_run steps over the index entries of every job claimed since the last vacuum
-- (~2 ms per claim after 300k jobs, growing with the run). Vacuum it after 2% of its rows change
-- instead of the default 20%, without the cost-based pauses (where autovacuum is on).
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
