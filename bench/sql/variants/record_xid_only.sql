-- A measurement, not a design (bench/capture_instructions.py --variant): the least transaction
-- record there can be, the transaction id alone, written as the shipped capture writes its record
-- (rewind.write_tx, called by the first change of each transaction). Applied to a database after
-- `rewind track`; it drops the NOT NULL of the columns it leaves empty.
--
-- Measured 2026-11-25, by the method of capture_instructions.py: 444,000 instructions per pgbench
-- transaction over untracked, against 466,000 for the shipped record in the same run and 346,000
-- without any record: the record's values (who, role, application, address, pid, run, start) cost
-- about 22,000; writing a record at all costs about 98,000.

ALTER TABLE rewind.tx ALTER COLUMN actor DROP NOT NULL, ALTER COLUMN role DROP NOT NULL, ALTER COLUMN started_at DROP NOT NULL;
CREATE OR REPLACE FUNCTION rewind.write_tx() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    i bigint;
    s text;
BEGIN
    INSERT INTO rewind.tx (xid) VALUES (pg_catalog.pg_current_xact_id())
    RETURNING id, pg_catalog.set_config('rewind.tx', id::text, true) INTO i, s;
    RETURN i;
END $$;
