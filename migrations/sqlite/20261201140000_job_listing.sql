-- What the jobs listing filters on; see the Postgres migration of the same name.
ALTER TABLE jobs ADD COLUMN worker TEXT;
CREATE INDEX jobs_failed_by_run ON jobs (run_id, id) WHERE state = 'failed';
