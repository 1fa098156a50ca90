-- Each run's lost-lease cap ([retry] max_lost), joined by the reaper (see the Postgres migration
-- of the same name), and the manifest's one writer: the counts the files were last written for,
-- and who is writing them now, until when (UTC text, as every timestamp here).
ALTER TABLE runs ADD COLUMN max_lost INTEGER NOT NULL DEFAULT 5 CHECK (max_lost >= 0);
ALTER TABLE runs ADD COLUMN manifest_succeeded INTEGER;
ALTER TABLE runs ADD COLUMN manifest_failed INTEGER;
ALTER TABLE runs ADD COLUMN manifest_writer TEXT;
ALTER TABLE runs ADD COLUMN manifest_claimed_until TEXT;
