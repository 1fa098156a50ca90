-- Each run's lost-lease cap ([retry] max_lost): the reaper joins the run of every expired lease,
-- so one statement takes back the leases of all runs, each under its own cap. Runs submitted
-- before get the cap their stored spec names (the default, 5, when it names none).
ALTER TABLE runs ADD COLUMN max_lost INTEGER NOT NULL DEFAULT 5 CHECK (max_lost >= 0);
UPDATE runs
SET max_lost = (regexp_match(spec, '^[ \t]*max_lost[ \t]*=[ \t]*([0-9]{1,9})[ \t]*(#.*)?$', 'n'))[1]::integer
WHERE regexp_match(spec, '^[ \t]*max_lost[ \t]*=[ \t]*([0-9]{1,9})[ \t]*(#.*)?$', 'n') IS NOT NULL;

-- The manifest's one writer. `manifest_succeeded` / `manifest_failed`: the job counts the files in
-- the output root were last written for (NULL: never), so a restarted coordinator or a second
-- replica does not write an unchanged manifest again. `manifest_writer` / `manifest_claimed_until`:
-- who is writing it now and until when; a writer that dies lets its claim lapse.
ALTER TABLE runs
    ADD COLUMN manifest_succeeded BIGINT,
    ADD COLUMN manifest_failed BIGINT,
    ADD COLUMN manifest_writer TEXT,
    ADD COLUMN manifest_claimed_until TIMESTAMPTZ;
