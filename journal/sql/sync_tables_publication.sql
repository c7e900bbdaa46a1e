-- rewind.sync_tables_publication(): the rewind_tables publication made to list the tracked tables
-- that can be published. Applied by revision 0002 after publications.sql, and again by 0007,
-- which taught it to add each table once: adding an inheritance parent adds its children, and a
-- tracked child then failed `rewind track --all` ("already member of publication").
CREATE OR REPLACE FUNCTION rewind.sync_tables_publication() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.prrelid::regclass AS rel
             FROM pg_catalog.pg_publication_rel p
             JOIN pg_catalog.pg_publication pub ON pub.oid = p.prpubid AND pub.pubname = 'rewind_tables'
             WHERE NOT coalesce(rewind.publishable(p.prrelid), false)
                OR NOT EXISTS (SELECT 1 FROM rewind.tracked t WHERE t.relid = p.prrelid
                               AND t.untracked_at IS NULL AND t.dropped_at IS NULL)
    LOOP
        EXECUTE pg_catalog.format('ALTER PUBLICATION rewind_tables DROP TABLE %s', r.rel);
    END LOOP;
    FOR r IN SELECT t.relid::regclass AS rel
             FROM rewind.tracked t
             WHERE t.relid IS NOT NULL AND t.untracked_at IS NULL AND t.dropped_at IS NULL
               AND rewind.publishable(t.relid)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel p
                               JOIN pg_catalog.pg_publication pub ON pub.oid = p.prpubid
                               WHERE pub.pubname = 'rewind_tables' AND p.prrelid = t.relid)
    LOOP
        -- Adding a table adds its inheritance children too: one of them may be in by now.
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel p
                       JOIN pg_catalog.pg_publication pub ON pub.oid = p.prpubid
                       WHERE pub.pubname = 'rewind_tables' AND p.prrelid = r.rel) THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION rewind_tables ADD TABLE %s', r.rel);
        END IF;
    END LOOP;
END $$;

SELECT rewind.sync_tables_publication();
