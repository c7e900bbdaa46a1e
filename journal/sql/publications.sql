-- Publications for the decoding stream (pgoutput), applied by Alembic revision 0002.
--
-- rewind_journal: what the sidecar mirrors off the database. Inserts only: the journal is
-- append-only, and the sidecar's own `UPDATE rewind.tx SET commit_lsn, committed_at` must not
-- come back through the stream as new changes (that would loop).
-- rewind_tracked: the tracked-table catalog, updates included (untracked, dropped, new key), so
-- table names and keys still resolve in the mirror after the database is gone.
-- rewind_tables: the tracked user tables themselves, for bypass detection and stream mode. Kept
-- in sync by rewind.sync_tables_publication() (sync_tables_publication.sql).
CREATE PUBLICATION rewind_journal FOR TABLE rewind.tx, rewind.change, rewind.ddl WITH (publish = 'insert');
CREATE PUBLICATION rewind_tracked FOR TABLE rewind.tracked WITH (publish = 'insert, update');
CREATE PUBLICATION rewind_tables WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);

-- A table in a publication that publishes UPDATE/DELETE must have a replica identity, or
-- PostgreSQL refuses those statements on it. So only tracked tables that have one (a primary key
-- under the default identity, an identity index, or FULL) are published; the others are listed
-- by rewind.unpublished_tables() and reported, never broken.
CREATE OR REPLACE FUNCTION rewind.publishable(rel oid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT c.relreplident IN ('f', 'i')
        OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                             WHERE i.indrelid = c.oid AND i.indisprimary))
    FROM pg_catalog.pg_class c WHERE c.oid = rel
$$;
