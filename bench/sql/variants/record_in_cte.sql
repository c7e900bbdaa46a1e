-- A capture design that was measured and not kept (bench/capture_instructions.py --variant): the
-- transaction record written by the same statement as the first change of its transaction, through
-- a data-modifying CTE, instead of by a call of its own (rewind.write_tx). Applied to a database
-- after `rewind track`; it replaces the UPDATE row functions and the INSERT statement function, the
-- two that pgbench's transactions call.
--
-- Measured 2026-11-25: 467,000 instructions per pgbench transaction over untracked, against 468,000
-- for the shipped capture (346,000 without any record): what the record costs is not the separate
-- statement but its values and its executor run, which PL/pgSQL builds afresh in every transaction
-- either way.

CREATE OR REPLACE FUNCTION rewind.row_capture(tbl integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    f text := rewind.row_capture_name(tbl);
BEGIN
    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $body$
DECLARE
    rewind_tx_id bigint := rewind.nonempty(pg_catalog.current_setting('rewind.tx', true))::bigint;
BEGIN
    IF rewind_tx_id IS NULL THEN
        WITH t AS (
            INSERT INTO rewind.tx (xid, actor, role, application, client_addr, pid, run, started_at)
            VALUES (pg_catalog.pg_current_xact_id(), rewind.current_actor(), session_user,
                    rewind.nonempty(pg_catalog.current_setting('application_name')), pg_catalog.inet_client_addr(),
                    pg_catalog.pg_backend_pid(), rewind.nonempty(pg_catalog.current_setting('rewind.run', true)),
                    pg_catalog.now())
            RETURNING id, pg_catalog.set_config('rewind.tx', id::text, true))
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
        SELECT t.id, rewind.journal_pos(), %s, 'U', pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW) FROM t;
    ELSE
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
        VALUES (rewind_tx_id, rewind.journal_pos(), %s, 'U', pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $body$ $f$, f, tbl, tbl);
    RETURN f;
END $fn$;
CREATE OR REPLACE FUNCTION rewind.capture_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    rewind_tx_id bigint := rewind.nonempty(pg_catalog.current_setting('rewind.tx', true))::bigint;
    rewind_pos bigint := rewind.journal_pos();
BEGIN
    IF rewind_tx_id IS NULL THEN
        WITH t AS (
            INSERT INTO rewind.tx (xid, actor, role, application, client_addr, pid, run, started_at)
            VALUES (pg_catalog.pg_current_xact_id(), rewind.current_actor(), session_user,
                    rewind.nonempty(pg_catalog.current_setting('application_name')), pg_catalog.inet_client_addr(),
                    pg_catalog.pg_backend_pid(), rewind.nonempty(pg_catalog.current_setting('rewind.run', true)),
                    pg_catalog.now())
            RETURNING id, pg_catalog.set_config('rewind.tx', id::text, true))
        INSERT INTO rewind.change (tx, pos, tbl, op, after)
        SELECT t.id, rewind_pos, TG_ARGV[0]::integer, 'I', pg_catalog.to_jsonb(n.*) FROM t, new_rows n;
    ELSE
        INSERT INTO rewind.change (tx, pos, tbl, op, after)
        SELECT rewind_tx_id, rewind_pos, TG_ARGV[0]::integer, 'I', pg_catalog.to_jsonb(n.*) FROM new_rows n;
    END IF;
    RETURN NULL;
END $$;
DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM rewind.tracked LOOP PERFORM rewind.row_capture(r.id); END LOOP; END $$;
