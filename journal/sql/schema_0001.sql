-- The rewind journal, version 1. Applied by Alembic revision 0001 (journal/migrations).
-- The capture path is the hot path of every tracked write, so the journal tables carry
-- no B-tree indexes (BRIN only): reading the journal is rare, writing it is constant.

REVOKE ALL ON SCHEMA rewind FROM PUBLIC;

CREATE TABLE rewind.tracked (
    id            serial PRIMARY KEY,
    relid         oid,                      -- NULL once the table is dropped
    schema_name   text NOT NULL,
    table_name    text NOT NULL,
    key_columns   text[] NOT NULL,          -- primary key; empty: the whole row is the identity
    mode          text NOT NULL DEFAULT 'journal',
    tracked_at    timestamptz NOT NULL DEFAULT now(),
    untracked_at  timestamptz,
    dropped_at    timestamptz
);
CREATE UNIQUE INDEX tracked_live_relid ON rewind.tracked (relid) WHERE untracked_at IS NULL AND dropped_at IS NULL;

-- Schemas whose future tables are tracked automatically (rewind track --schema / --all).
CREATE TABLE rewind.tracked_schema (
    schema_name text PRIMARY KEY,
    added_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per transaction that wrote to a tracked table (an "action").
CREATE TABLE rewind.tx (
    id           bigserial PRIMARY KEY,
    xid          xid8 NOT NULL,
    actor        text NOT NULL,
    role         text NOT NULL,
    application  text,
    client_addr  inet,
    pid          integer,
    run          text,
    started_at   timestamptz NOT NULL,
    commit_lsn   pg_lsn,
    committed_at timestamptz
);

CREATE SEQUENCE rewind.change_id_seq CACHE 1000;

-- One row per changed row. op: I insert, U update, D delete, T truncate (before image kept).
-- Order is (pos, id). pos is the WAL insert position when the statement was journaled: a later
-- writer of the same row waited for the earlier one to commit, so its pos is greater, whatever
-- session it ran in. id (from a per-session sequence cache, so no global lock per row) orders
-- the rows of one session. Ordering by id alone would interleave sessions' cache blocks.
CREATE TABLE rewind.change (
    id      bigint NOT NULL DEFAULT nextval('rewind.change_id_seq'),
    pos     bigint NOT NULL,
    tx      bigint NOT NULL,
    tbl     integer NOT NULL,
    op      "char" NOT NULL,
    before  jsonb,
    after   jsonb,
    at      timestamptz NOT NULL DEFAULT statement_timestamp()
);
ALTER SEQUENCE rewind.change_id_seq OWNED BY rewind.change.id;
CREATE INDEX change_pos_brin ON rewind.change USING brin (pos);
CREATE INDEX change_tx_brin ON rewind.change USING brin (tx);

-- DDL on tracked tables (and CREATE in tracked schemas), with the action that ran it.
CREATE TABLE rewind.ddl (
    id              bigserial PRIMARY KEY,
    tx              bigint NOT NULL,
    tbl             integer,
    command         text NOT NULL,
    object_type     text,
    object_identity text,
    at              timestamptz NOT NULL DEFAULT statement_timestamp()
);
