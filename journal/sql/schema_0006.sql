-- Stream mode, version 6 (rewind track --mode stream): row images come from WAL, decoded by the
-- sidecar, instead of from triggers.
--
-- prior_identity: the REPLICA IDENTITY a table had before stream mode set it to FULL, so that
-- leaving stream mode (untrack, or --mode journal) puts it back.
-- rewind.ingested: one row per decoded transaction whose stream-mode rows the sidecar wrote into
-- rewind.tx/rewind.change, keyed by its commit LSN: a replay after a crash between that write and
-- the slot's confirmation writes nothing twice. Not in any publication.
ALTER TABLE rewind.tracked ADD COLUMN IF NOT EXISTS prior_identity "char";

CREATE TABLE IF NOT EXISTS rewind.ingested (
    commit_lsn  pg_lsn PRIMARY KEY,
    tx          bigint NOT NULL,
    changes     integer NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- What the sidecar journals from WAL is marked (src 's') and kept out of rewind_journal by a row
-- filter: the sidecar mirrors those rows itself as it writes them, and decoding them a second
-- time would double what the walsender and the sidecar do per stream-mode change.
ALTER TABLE rewind.tx ADD COLUMN IF NOT EXISTS src "char";
ALTER TABLE rewind.change ADD COLUMN IF NOT EXISTS src "char";
ALTER PUBLICATION rewind_journal SET TABLE rewind.tx WHERE (src IS NULL), rewind.change WHERE (src IS NULL), rewind.ddl;
