-- A capture design that was measured and not kept (bench/capture_instructions.py --variant): the
-- transaction record as a row of rewind.change itself (op 'X', with the attribution in columns of
-- its own), written by the first change's statement as a second row of its VALUES, so that no
-- second table, index or statement is touched. Applied to a database after `rewind track`; it
-- replaces the UPDATE row functions and the INSERT statement function.
--
-- Measured 2026-11-25: 491,000 instructions per pgbench transaction over untracked, against 468,000
-- for the shipped capture (346,000 without any record): a two-row VALUES with the record's values
-- costs more to set up, in every transaction, than the separate INSERT it saves.

ALTER TABLE rewind.change ADD COLUMN xid xid8, ADD COLUMN role text, ADD COLUMN application text, ADD COLUMN client_addr inet,
  ADD COLUMN pid integer, ADD COLUMN run text, ADD COLUMN actor text, ADD COLUMN started_at timestamptz;
CREATE OR REPLACE FUNCTION rewind.journal_tx() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE i bigint := pg_catalog.nextval('rewind.tx_id_seq'); s text;
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, xid, role, application, client_addr, pid, run, actor, started_at)
    VALUES (i, 0, 0, 'X', pg_catalog.pg_current_xact_id(), session_user, pg_catalog.current_setting('application_name'),
            pg_catalog.inet_client_addr(), pg_catalog.pg_backend_pid(), pg_catalog.current_setting('rewind.run', true),
            pg_catalog.current_setting('rewind.actor', true), pg_catalog.now());
    s := pg_catalog.set_config('rewind.tx', i::text, true);
    RETURN i;
END $$;
CREATE OR REPLACE FUNCTION rewind.capture_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    rewind_tx_id bigint := coalesce(rewind.nonempty(pg_catalog.current_setting('rewind.tx', true))::bigint, rewind.journal_tx());
    rewind_pos bigint := rewind.journal_pos();
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, after)
    SELECT rewind_tx_id, rewind_pos, TG_ARGV[0]::integer, 'I', pg_catalog.to_jsonb(n.*) FROM new_rows n;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION rewind.row_capture(tbl integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    f text := rewind.row_capture_name(tbl);
BEGIN
    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $body$
DECLARE
    rewind_tx_id bigint := rewind.nonempty(pg_catalog.current_setting('rewind.tx', true))::bigint;
    s text;
BEGIN
    IF rewind_tx_id IS NULL THEN
        rewind_tx_id := pg_catalog.nextval('rewind.tx_id_seq');
        s := pg_catalog.set_config('rewind.tx', rewind_tx_id::text, true);
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after, xid, role, application, client_addr, pid, run, actor, started_at)
        VALUES (rewind_tx_id, 0, 0, 'X', NULL, NULL, pg_catalog.pg_current_xact_id(), session_user, pg_catalog.current_setting('application_name'),
                pg_catalog.inet_client_addr(), pg_catalog.pg_backend_pid(), pg_catalog.current_setting('rewind.run', true),
                pg_catalog.current_setting('rewind.actor', true), pg_catalog.now()),
               (rewind_tx_id, rewind.journal_pos(), %s, 'U', pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    ELSE
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
        VALUES (rewind_tx_id, rewind.journal_pos(), %s, 'U', pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $body$ $f$, f, tbl, tbl);
    RETURN f;
END $fn$;
DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM rewind.tracked LOOP PERFORM rewind.row_capture(r.id); END LOOP; END $$;
