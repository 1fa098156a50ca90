-- Whether run $1 has a queued or leased job.
SELECT EXISTS (SELECT 1 FROM jobs WHERE run_id = $1 AND state = 'queued')
    OR EXISTS (SELECT 1 FROM jobs WHERE run_id = $1 AND state = 'leased')
