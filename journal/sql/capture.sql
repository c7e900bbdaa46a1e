-- Capture functions. CREATE OR REPLACE so that a migration can re-apply this file.
--
-- Why statement-level triggers with transition tables for INSERT and DELETE: a bulk statement then
-- costs one INSERT ... SELECT into the journal instead of one trigger call per row. UPDATE of a
-- plain table is the exception (see row_capture).
--
-- Why no SET search_path on the capture functions (SECURITY DEFINER, called on every write): a
-- function-level SET makes every call much dearer (it opens a GUC nesting level). They run as
-- rewind's owner with the writer's search_path, and a writer can put a schema of its own ahead of
-- pg_catalog there, with an operator that would run as the owner. So the capture path names every
-- relation and function with its schema and looks up no operator at all: OPERATOR(pg_catalog.=)
-- where it compares, rewind.nonempty for nullif (whose "=" is looked up like any operator).
-- The functions that run at DDL time (track, attach, the event triggers, ...) compare freely; they
-- are rare, so they pay for SET search_path = pg_catalog, pg_temp.

-- s, or NULL when it is empty: nullif(s, '') without an operator (see the head of this file). The
-- regular expression (cached by the backend) matches all of any non-empty s, newlines included, and
-- nothing in ''. Of the operator-free forms tried, the cheapest: 6,000 instructions per pgbench
-- transaction over nullif, against 21,000 for a CASE on texteq (s twice) and 24,000 for
-- string_to_array(s, '')[1] (bench/capture_instructions.py).
CREATE OR REPLACE FUNCTION rewind.nonempty(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog."substring"(s, '.+')
$$;

-- Who is writing: rewind.actor, else application_name, else the role. A plain SQL function, so
-- the planner inlines it into its callers.
CREATE OR REPLACE FUNCTION rewind.current_actor() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(rewind.nonempty(pg_catalog.current_setting('rewind.actor', true)),
                    rewind.nonempty(pg_catalog.current_setting('application_name')),
                    session_user)::text
$$;

-- The transaction record is written by the first captured change of a transaction; later
-- changes find its id in a transaction-local setting. set_config(..., true) lasts until the
-- transaction ends and a savepoint rollback reverts it together with the row, so the setting and
-- the record cannot disagree, and a new transaction finds it empty. (A session could set
-- rewind.tx itself and so file its changes under another transaction's record; checking the
-- record here would cost every statement an index lookup, so the decoding stream reports such
-- rows instead: journal/bypass.py, find_misfiled.)
-- Not SECURITY DEFINER: only the capture functions call it, and they already run as the owner.
CREATE OR REPLACE FUNCTION rewind.write_tx() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    i bigint;
    s text;
BEGIN
    INSERT INTO rewind.tx (xid, actor, role, application, client_addr, pid, run, started_at)
    VALUES (
        pg_catalog.pg_current_xact_id(),
        rewind.current_actor(),
        session_user,
        rewind.nonempty(pg_catalog.current_setting('application_name')),
        pg_catalog.inet_client_addr(),
        pg_catalog.pg_backend_pid(),
        rewind.nonempty(pg_catalog.current_setting('rewind.run', true)),
        pg_catalog.now())
    RETURNING id, pg_catalog.set_config('rewind.tx', id::text, true) INTO i, s;
    RETURN i;
END $$;

-- The transaction record's id for a capture trigger, as a plain SQL function, which the planner
-- inlines into the trigger's expression: a statement after the first of its transaction makes no
-- plpgsql call; the first one goes on to write_tx. Kept to three function calls: PL/pgSQL builds
-- this expression afresh in every transaction, and each call in it costs a catalog lookup and a
-- permission check there. (Counted with bench/capture_instructions.py: the earlier form, which
-- kept the transaction id beside the record's in the setting and compared it, cost about 40,000
-- more instructions per pgbench transaction.)
CREATE OR REPLACE FUNCTION rewind.journal_tx() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(rewind.nonempty(pg_catalog.current_setting('rewind.tx', true))::bigint, rewind.write_tx())
$$;

-- The current transaction's record, written now if it has none yet: how the undo learns its own
-- action id before it changes anything.
CREATE OR REPLACE FUNCTION rewind.begin_tx() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER AS $$
    SELECT rewind.journal_tx()
$$;

-- Where a statement's changes stand in the journal's order: the WAL insert position (see
-- rewind.change). A plain SQL function, so the planner inlines it: no call overhead.
CREATE OR REPLACE FUNCTION rewind.journal_pos() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT (pg_catalog.pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_lsn)::bigint
$$;

-- Whole-row references are written alias.* and variables carry long names, because a user
-- column named like an alias (n, o, t) would otherwise be taken instead.
CREATE OR REPLACE FUNCTION rewind.capture_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    rewind_tx_id bigint := rewind.journal_tx();
    rewind_pos bigint := rewind.journal_pos();
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, after)
    SELECT rewind_tx_id, rewind_pos, TG_ARGV[0]::integer, 'I', pg_catalog.to_jsonb(n.*) FROM new_rows n;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION rewind.capture_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    rewind_tx_id bigint := rewind.journal_tx();
    rewind_pos bigint := rewind.journal_pos();
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, before)
    SELECT rewind_tx_id, rewind_pos, TG_ARGV[0]::integer, 'D', pg_catalog.to_jsonb(o.*) FROM old_rows o;
    RETURN NULL;
END $$;

-- UPDATE of a plain table: a row trigger. OLTP traffic is mostly one-row UPDATEs, and pairing the
-- transition tables (below) costs a join of two numbered scans per statement, a third more than
-- the whole row trigger (measured in a procedure loop: 26 us against 38 us per one-row UPDATE).
-- Bulk UPDATEs pay a call per row instead; INSERT and DELETE keep statement triggers, for which
-- a bulk statement is the common disaster. Each row gets its own position, in statement order.
-- One function per table, with its tracked id written in: a trigger argument would be read through
-- TG_ARGV, an array PL/pgSQL builds afresh on every call (18,000 instructions of a pgbench
-- transaction's three one-row UPDATEs, bench/capture_instructions.py).
CREATE OR REPLACE FUNCTION rewind.row_capture_name(tbl integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.format('rewind.%I()', pg_catalog.format('capture_update_row_%s', tbl))
$$;

-- Create (or replace) the UPDATE row trigger's function of tracked id tbl; returns its name.
CREATE OR REPLACE FUNCTION rewind.row_capture(tbl integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    f text := rewind.row_capture_name(tbl);
BEGIN
    EXECUTE pg_catalog.format($f$CREATE OR REPLACE FUNCTION %s RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $body$
DECLARE
    rewind_tx_id bigint := rewind.journal_tx();
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
    VALUES (rewind_tx_id, rewind.journal_pos(), %s, 'U', pg_catalog.to_jsonb(OLD), pg_catalog.to_jsonb(NEW));
    RETURN NULL;
END $body$$f$, f, tbl);
    RETURN f;
END $fn$;

-- Drop an UPDATE row trigger function (from row_capture; NULL: none) once no trigger calls it.
CREATE OR REPLACE FUNCTION rewind.drop_row_capture(fn regprocedure) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF fn IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                                      WHERE tgfoid OPERATOR(pg_catalog.=) fn::oid) THEN
        EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS %s', fn);
    END IF;
END $$;

-- UPDATE of a partitioned table: a statement trigger, because a row that moves to another
-- partition fires no row UPDATE trigger, while the root's transition tables hold it.
-- Old and new transition rows are appended pairwise by the executor, so their positions pair
-- each before image with its after image even when the update changed the primary key.
CREATE OR REPLACE FUNCTION rewind.capture_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    rewind_tx_id bigint := rewind.journal_tx();
    rewind_pos bigint := rewind.journal_pos();
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
    SELECT rewind_tx_id, rewind_pos, TG_ARGV[0]::integer, 'U', a.j, b.j
    FROM (SELECT pg_catalog.row_number() OVER () AS rn, pg_catalog.to_jsonb(o.*) AS j FROM old_rows o) a
    JOIN (SELECT pg_catalog.row_number() OVER () AS rn, pg_catalog.to_jsonb(n.*) AS j FROM new_rows n) b
      ON a.rn OPERATOR(pg_catalog.=) b.rn;
    RETURN NULL;
END $$;

-- TRUNCATE has no transition table: keep the rows before they go. ONLY, because every
-- partition (or child) that is truncated fires its own trigger. Truncating an empty table journals
-- no row, so it says so in WAL instead ('rewind.truncate', the tracked id): the decoding stream
-- would otherwise take the TRUNCATE it decodes for one that went around the trigger.
CREATE OR REPLACE FUNCTION rewind.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE pg_catalog.format(
        'INSERT INTO rewind.change (tx, pos, tbl, op, before) SELECT $1, $3, $2, ''T'', pg_catalog.to_jsonb(r.*) FROM ONLY %I.%I r',
        TG_TABLE_SCHEMA, TG_TABLE_NAME)
    USING rewind.begin_tx(), TG_ARGV[0]::integer,
          rewind.journal_pos();
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 AND pg_catalog.current_setting('wal_level') = 'logical' THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'rewind.truncate', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END $$;

-- Stream mode (rewind track --mode stream): WAL carries the row images (REPLICA IDENTITY FULL)
-- and the sidecar journals them; all a transaction adds is who it is, once: one transactional
-- logical message. The trigger's WHEN clause lets only a transaction's first statement through,
-- so every later one costs a setting lookup and no function call. A savepoint rollback discards
-- the message and reverts the setting together.
CREATE OR REPLACE FUNCTION rewind.stream_context() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    x text := pg_catalog.pg_current_xact_id()::text;
    s text;
BEGIN
    PERFORM pg_catalog.pg_logical_emit_message(true, 'rewind.context', pg_catalog.json_build_object(
        'xid', x,
        'actor', rewind.current_actor(),
        'role', session_user,
        'application', rewind.nonempty(pg_catalog.current_setting('application_name')),
        'client_addr', pg_catalog.inet_client_addr(),
        'pid', pg_catalog.pg_backend_pid(),
        'run', rewind.nonempty(pg_catalog.current_setting('rewind.run', true)),
        'started_at', pg_catalog.now())::text);
    s := pg_catalog.set_config('rewind.ctx', x, true);  -- an assignment: no query
    RETURN NULL;
END $$;

-- The partitions of a partitioned table (direct ones: each recursion walks one level). Inheritance
-- children of a plain table are not partitions and are not listed.
CREATE OR REPLACE FUNCTION rewind.partitions(rel regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
    WHERE i.inhparent = rel
$$;

-- The primary key columns of a table, in key order; empty when it has none.
CREATE OR REPLACE FUNCTION rewind.key_columns(rel regclass) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
$$;

-- Attach the capture triggers to one relation, recording its changes under tracked id tbl.
-- Partitions get the root's id, so a row's history does not depend on the path of the write.
-- Partitioned tables and their partitions keep statement triggers throughout (see capture_update);
-- so do tables with inheritance children, whose rows the parent's transition tables include. A
-- table whose capture no longer fits (it became a partition or a parent) is attached afresh.
-- A table in stream mode gets attach_stream instead.
CREATE OR REPLACE FUNCTION rewind.attach(rel regclass, tbl integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q text := pg_catalog.format('%s', rel);
    part regclass;
    by_row boolean := NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = rel
                                  AND (c.relkind = 'p' OR c.relispartition))
                      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = rel);
    attached_by_row boolean;
    attached_fn oid;
BEGIN
    IF EXISTS (SELECT 1 FROM rewind.tracked t WHERE t.id = tbl AND t.mode = 'stream') THEN
        PERFORM rewind.attach_stream(rel, tbl);
        RETURN;
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = rel AND tgname = 'rewind_capture_s') THEN
        PERFORM rewind.drop_capture(rel);  -- leaving stream mode
    END IF;
    SELECT (tgtype::integer & 1) = 1, tgfoid INTO attached_by_row, attached_fn
    FROM pg_catalog.pg_trigger WHERE tgrelid = rel AND tgname = 'rewind_capture_u';
    IF attached_by_row = by_row
       AND (NOT by_row OR attached_fn OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(rewind.row_capture_name(tbl))::oid) THEN
        RETURN;
    ELSIF attached_by_row IS NOT NULL THEN
        PERFORM rewind.drop_capture(rel);
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_i AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_insert(%s)', q, tbl);
    IF by_row THEN
        EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_u AFTER UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION %s', q, rewind.row_capture(tbl));
    ELSE
        EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_u AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_update(%s)', q, tbl);
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_d AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_delete(%s)', q, tbl);
    EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_t BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_truncate(%s)', q, tbl);
    FOR part IN SELECT rewind.partitions(rel) LOOP
        PERFORM rewind.attach(part, tbl);
    END LOOP;
END $$;

-- Stream mode's capture of one relation and its partitions: the context trigger, REPLICA IDENTITY
-- FULL (complete old rows in WAL), and the journal's TRUNCATE trigger, because WAL carries none
-- of the rows a TRUNCATE removes.
CREATE OR REPLACE FUNCTION rewind.attach_stream(rel regclass, tbl integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q text := pg_catalog.format('%s', rel);
    part regclass;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = rel AND tgname = 'rewind_capture_s') THEN
        PERFORM rewind.drop_capture(rel);
        EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT WHEN (pg_catalog.current_setting(''rewind.ctx'', true) IS DISTINCT FROM pg_catalog.pg_current_xact_id()::text) EXECUTE FUNCTION rewind.stream_context()', q);
        EXECUTE pg_catalog.format('CREATE TRIGGER rewind_capture_t BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_truncate(%s)', q, tbl);
    END IF;
    IF (SELECT c.relreplident FROM pg_catalog.pg_class c WHERE c.oid = rel) <> 'f' THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', q);
    END IF;
    FOR part IN SELECT rewind.partitions(rel) LOOP
        PERFORM rewind.attach_stream(part, tbl);
    END LOOP;
END $$;

-- Put back the replica identity a table had before stream mode made it FULL (default or
-- nothing; an identity index is not remembered, and FULL stays).
CREATE OR REPLACE FUNCTION rewind.restore_identity(rel regclass, prior "char") RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part regclass;
BEGIN
    IF prior IN ('d', 'n') AND (SELECT c.relreplident FROM pg_catalog.pg_class c WHERE c.oid = rel) = 'f' THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY %s', rel,
                                  CASE prior WHEN 'd' THEN 'DEFAULT' ELSE 'NOTHING' END);
    END IF;
    FOR part IN SELECT rewind.partitions(rel) LOOP
        PERFORM rewind.restore_identity(part, prior);
    END LOOP;
END $$;

-- Switch a tracked table between journal and stream mode; nothing when it is in that mode.
CREATE OR REPLACE FUNCTION rewind.set_mode(rel regclass, new_mode text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid integer;
    old_mode text;
    prior "char";
BEGIN
    IF new_mode NOT IN ('journal', 'stream') THEN
        RAISE EXCEPTION 'unknown capture mode %', new_mode;
    END IF;
    SELECT t.id, t.mode, t.prior_identity INTO tid, old_mode, prior FROM rewind.tracked t
    WHERE t.relid = rel AND t.untracked_at IS NULL AND t.dropped_at IS NULL;
    IF tid IS NULL OR old_mode = new_mode THEN
        RETURN;
    END IF;
    UPDATE rewind.tracked
    SET mode = new_mode,
        prior_identity = CASE WHEN new_mode = 'stream'
                              THEN (SELECT c.relreplident FROM pg_catalog.pg_class c WHERE c.oid = rel) END
    WHERE id = tid;
    PERFORM rewind.attach(rel, tid);
    IF new_mode = 'journal' THEN
        PERFORM rewind.restore_identity(rel, prior);
    END IF;
END $$;

-- The capture triggers of one relation, not of its children, and its UPDATE row trigger's
-- function (see row_capture).
CREATE OR REPLACE FUNCTION rewind.drop_capture(rel regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q text := pg_catalog.format('%s', rel);
    row_fn regprocedure;
BEGIN
    SELECT p.oid INTO row_fn FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid OPERATOR(pg_catalog.=) rel::oid AND tg.tgname = 'rewind_capture_u'
      AND p.pronamespace OPERATOR(pg_catalog.=) 'rewind'::regnamespace::oid
      AND p.proname OPERATOR(pg_catalog.~) '^capture_update_row_[0-9]+$';
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS rewind_capture_i ON %s', q);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS rewind_capture_u ON %s', q);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS rewind_capture_d ON %s', q);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS rewind_capture_t ON %s', q);
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS rewind_capture_s ON %s', q);
    PERFORM rewind.drop_row_capture(row_fn);
END $$;

CREATE OR REPLACE FUNCTION rewind.detach(rel regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part regclass;
BEGIN
    PERFORM rewind.drop_capture(rel);
    FOR part IN SELECT inhrelid::regclass FROM pg_catalog.pg_inherits WHERE inhparent = rel LOOP
        PERFORM rewind.detach(part);
    END LOOP;
END $$;

-- Track one table (idempotent); returns its tracked id. Partitions are tracked through their root.
CREATE OR REPLACE FUNCTION rewind.track(rel regclass) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id integer;
    root regclass := rel;
    parent regclass;
BEGIN
    LOOP
        SELECT i.inhparent::regclass INTO parent FROM pg_catalog.pg_inherits i
        JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhrelid = root AND c.relispartition;
        EXIT WHEN parent IS NULL;
        root := parent;
    END LOOP;
    SELECT t.id INTO id FROM rewind.tracked t
    WHERE t.relid = root AND t.untracked_at IS NULL AND t.dropped_at IS NULL;
    IF id IS NULL THEN
        INSERT INTO rewind.tracked (relid, schema_name, table_name, key_columns)
        SELECT c.oid, n.nspname, c.relname, rewind.key_columns(c.oid)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = root
        RETURNING tracked.id INTO id;
    END IF;
    PERFORM rewind.attach(root, id);
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION rewind.untrack(rel regclass) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_mode text;
    prior "char";
BEGIN
    PERFORM rewind.detach(rel);
    UPDATE rewind.tracked SET untracked_at = now()
    WHERE relid = rel AND untracked_at IS NULL AND dropped_at IS NULL
    RETURNING mode, prior_identity INTO old_mode, prior;
    IF old_mode = 'stream' THEN
        PERFORM rewind.restore_identity(rel, prior);
    END IF;
    RETURN old_mode IS NOT NULL;
END $$;

-- DDL capture: record DDL on tracked tables with its action, track new tables in tracked
-- schemas and new partitions of tracked tables, and keep key columns current.
CREATE OR REPLACE FUNCTION rewind.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
    tid integer;
BEGIN
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands()
               WHERE object_type IN ('table', 'index', 'table constraint')
                 AND schema_name IS DISTINCT FROM 'rewind' AND schema_name IS DISTINCT FROM 'pg_temp'
    LOOP
        tid := NULL;
        IF cmd.object_type = 'table' AND cmd.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
            IF EXISTS (SELECT 1 FROM rewind.tracked_schema WHERE schema_name = cmd.schema_name)
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN rewind.tracked t ON t.relid = i.inhparent
                          AND t.untracked_at IS NULL AND t.dropped_at IS NULL
                          JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
                          WHERE i.inhrelid = cmd.objid) THEN
                tid := rewind.track(cmd.objid::regclass);
            END IF;
        ELSIF cmd.object_type = 'table' AND cmd.command_tag = 'ALTER TABLE' THEN
            SELECT t.id INTO tid FROM rewind.tracked t
            WHERE t.relid = cmd.objid AND t.untracked_at IS NULL AND t.dropped_at IS NULL;
            IF tid IS NOT NULL THEN
                UPDATE rewind.tracked SET key_columns = rewind.key_columns(cmd.objid) WHERE id = tid;
                -- ATTACH PARTITION: the new partition records under its root. Partitions only: an
                -- inheritance child is a table of its own, tracked (or not) under its own id.
                PERFORM rewind.attach(i.inhrelid::regclass, tid)
                FROM pg_catalog.pg_inherits i
                JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition
                WHERE i.inhparent = cmd.objid;
            END IF;
        ELSE
            -- an index or constraint: record it against its table
            SELECT t.id INTO tid FROM rewind.tracked t
            WHERE t.untracked_at IS NULL AND t.dropped_at IS NULL
              AND t.relid = CASE cmd.object_type
                  WHEN 'index' THEN (SELECT indrelid FROM pg_catalog.pg_index WHERE indexrelid = cmd.objid)
                  ELSE (SELECT conrelid FROM pg_catalog.pg_constraint WHERE oid = cmd.objid) END;
        END IF;
        IF tid IS NOT NULL THEN
            INSERT INTO rewind.ddl (tx, tbl, command, object_type, object_identity)
            VALUES (rewind.begin_tx(), tid, cmd.command_tag, cmd.object_type, cmd.object_identity);
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION rewind.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    obj record;
    tid integer;
BEGIN
    FOR obj IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects()
               WHERE object_type = 'table' AND schema_name IS DISTINCT FROM 'rewind'
    LOOP
        UPDATE rewind.tracked SET dropped_at = now(), relid = NULL
        WHERE relid = obj.objid AND untracked_at IS NULL AND dropped_at IS NULL
        RETURNING id INTO tid;
        IF tid IS NOT NULL THEN
            INSERT INTO rewind.ddl (tx, tbl, command, object_type, object_identity)
            VALUES (rewind.begin_tx(), tid, TG_TAG, obj.object_type, obj.object_identity);
            -- its trigger went with the table
            PERFORM rewind.drop_row_capture(pg_catalog.to_regprocedure(rewind.row_capture_name(tid)));
        END IF;
    END LOOP;
END $$;

-- The per-table UPDATE functions are generated (row_capture); re-applying this file regenerates
-- them, so that a migration that changes their body reaches every table.
SELECT rewind.row_capture(pg_catalog."substring"(p.proname, '[0-9]+$')::integer)
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'rewind'::regnamespace AND p.proname ~ '^capture_update_row_[0-9]+$';
