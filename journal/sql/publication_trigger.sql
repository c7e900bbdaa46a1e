-- Keeps rewind_tables in step with DDL in the same transaction as the DDL: a table that loses its
-- primary key leaves the publication before the next UPDATE could be refused for lacking a
-- replica identity, and tables tracked by the DDL event trigger join it. Needs superuser, like
-- the other event triggers. Named to sort after rewind_ddl_end, which does the tracking.
CREATE OR REPLACE FUNCTION rewind.on_ddl_sync_publication() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'DROP TABLE') THEN
        PERFORM rewind.sync_tables_publication();
    END IF;
END $$;

DROP EVENT TRIGGER IF EXISTS rewind_ddl_publication;
CREATE EVENT TRIGGER rewind_ddl_publication ON ddl_command_end EXECUTE FUNCTION rewind.on_ddl_sync_publication();
