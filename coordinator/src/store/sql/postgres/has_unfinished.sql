-- Whether run $1 has a queued or leased job, from the state counters.
SELECT COALESCE(sum(jobs), 0) > 0
FROM state_counts
WHERE run_id = $1 AND state IN ('queued', 'leased')
