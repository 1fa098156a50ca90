-- Whether run $1 has a queued or leased job: each EXISTS probes a partial index (queued jobs by
-- run; leased jobs, few at any time), so this stays cheap however large the run.
SELECT EXISTS (SELECT 1 FROM jobs WHERE run_id = $1 AND state = 'queued')
    OR EXISTS (SELECT 1 FROM jobs WHERE run_id = $1 AND state = 'leased')
