-- Capture gaps, version 4: what the journal is missing, kept in the database too so that
-- `rewind status --dsn` shows it without the mirror. Written by the decoding stream after its
-- mirror commit: kind 'bypass' (decoded writes to a tracked table that no journal row covers:
-- disabled triggers, session_replication_role = replica) and 'slot_reset' (the slot was
-- recreated: nothing between start_lsn and end_lsn was seen). Not in any publication, so it never
-- comes back through the stream. One row per (kind, end_lsn, table): a replay after a crash
-- between the mirror commit and this insert writes nothing twice.
CREATE TABLE IF NOT EXISTS rewind.gap (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('bypass', 'slot_reset')),
    xid         text,
    table_name  text,                 -- schema.table, unquoted
    changes     bigint,
    complete    boolean NOT NULL,     -- the images suffice to rebuild every row it names
    at          timestamptz NOT NULL, -- commit time of a bypass, detection time of a reset
    start_lsn   pg_lsn,
    end_lsn     pg_lsn NOT NULL,      -- commit LSN of a bypass, the new slot's start of a reset
    start_time  timestamptz,
    end_time    timestamptz,
    detail      jsonb,
    images      jsonb,                -- [{op, lsn, before, after, unchanged}] as WAL carried them
    adopted_tx  bigint,               -- the rewind.tx its complete images were journaled as (rewind adopt)
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS gap_identity ON rewind.gap (kind, end_lsn, coalesce(table_name, ''));
CREATE INDEX IF NOT EXISTS gap_at ON rewind.gap (at);
