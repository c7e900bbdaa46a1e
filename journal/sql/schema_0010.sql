-- Revision 10: each plain table's UPDATE row trigger calls a function of its own,
-- rewind.capture_update_row_<tracked id>() (see row_capture in capture.sql), instead of the shared
-- rewind.capture_update_row(), which read the tracked id from TG_ARGV. Every trigger on the shared
-- function is replaced in place, whichever table it is on and however it got there, with its id
-- and its enabled state kept; then the shared function goes.
DO $do$
DECLARE
    t record;
BEGIN
    IF pg_catalog.to_regprocedure('rewind.capture_update_row()') IS NULL THEN
        RETURN;
    END IF;
    FOR t IN SELECT tg.tgrelid::regclass AS rel, tg.tgname, tg.tgenabled,
                    pg_catalog.split_part(pg_catalog.encode(tg.tgargs, 'escape'), '\000', 1)::integer AS tbl
             FROM pg_catalog.pg_trigger tg
             WHERE tg.tgfoid = 'rewind.capture_update_row()'::regprocedure
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION %s',
                                  t.tgname, t.rel, rewind.row_capture(t.tbl));
        IF t.tgenabled <> 'O' THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s %s TRIGGER %I', t.rel,
                                      CASE t.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                                                       ELSE 'ENABLE ALWAYS' END, t.tgname);
        END IF;
    END LOOP;
    DROP FUNCTION rewind.capture_update_row();
END $do$;

-- The publication's DDL-time functions run with a fixed search_path too (see the head of capture.sql).
DO $do$
BEGIN
    IF pg_catalog.to_regprocedure('rewind.on_ddl_sync_publication()') IS NOT NULL THEN
        ALTER FUNCTION rewind.on_ddl_sync_publication() SET search_path = pg_catalog, pg_temp;
    END IF;
    ALTER FUNCTION rewind.sync_tables_publication() SET search_path = pg_catalog, pg_temp;
END $do$;
