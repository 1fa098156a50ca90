-- What the jobs listing of the HTTP API filters on. `worker`: the name of the worker that took the
-- job's latest attempt (set by the claim, kept after the attempt ends, unlike `leased_by`), so
-- finished jobs can be listed by the worker that ran them. Failed jobs get their own partial
-- index: the failures page lists a run's few failed jobs among a million without walking the
-- rest, and the index is touched only when a job enters or leaves `failed`.
ALTER TABLE jobs ADD COLUMN worker TEXT COLLATE "C";
CREATE INDEX jobs_failed_by_run ON jobs (run_id, id) WHERE state = 'failed';
