-- The two trigger-based audit designs that the journal-mode target is set against (issue #2's
-- references), for `bench/capture_overhead.py --reference`, installed on their own pgbench
-- database, which attaches one of the two functions to every pgbench table as an AFTER ROW
-- trigger. generic: the common audit trigger, to_jsonb of the old and the new row into an audit
-- table with a bigserial primary key. lean: the rows' text into a table with no index and no
-- defaults. Neither records who wrote or in which transaction: they cost capture alone, without
-- Rewind's transaction record.

CREATE TABLE bench_audit_generic (
    id        bigserial PRIMARY KEY,
    tbl       text NOT NULL,
    op        text NOT NULL,
    old_row   jsonb,
    new_row   jsonb,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bench_audit_lean (tbl oid, op text, old_row text, new_row text);

CREATE FUNCTION bench_audit_generic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_audit_generic (tbl, op, old_row, new_row)
    VALUES (TG_TABLE_NAME, TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END $$;

CREATE FUNCTION bench_audit_lean() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bench_audit_lean VALUES (TG_RELID, TG_OP, NULL, NEW::text);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO bench_audit_lean VALUES (TG_RELID, TG_OP, OLD::text, NEW::text);
    ELSE
        INSERT INTO bench_audit_lean VALUES (TG_RELID, TG_OP, OLD::text, NULL);
    END IF;
    RETURN NULL;
END $$;
