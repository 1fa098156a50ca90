-- Replaces the specs of the jobs in $1 with the JSON texts in $2 (a resubmit's re-resolution).
UPDATE job_specs
SET spec = w.spec::json
FROM unnest($1::bigint[], $2::text[]) AS w (id, spec)
WHERE job_specs.job_id = w.id
