-- Claims the write of run $1's manifest for the counts $5 (succeeded) / $6 (failed) as writer $2,
-- until $3, unless the files were already written for exactly these counts or another writer's
-- claim is still valid at $4 (now). One conditional update: of any number of callers (the
-- reaper, `status --wait`, other replicas) at most one gets the row back.
UPDATE runs
SET manifest_writer = $2,
    manifest_claimed_until = $3
WHERE id = $1
  AND (manifest_writer IS NULL OR manifest_claimed_until <= $4)
  AND (manifest_succeeded IS NOT $5 OR manifest_failed IS NOT $6)
RETURNING id
