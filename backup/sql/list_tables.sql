-- Tables whose rows pg_dump saves: ordinary tables outside the system schemas that no
-- extension owns. Partitions are counted leaf by leaf; partitioned parents hold no rows.
-- With each table: its size (the largest are hashed first, the smallest many to a query), its
-- live columns in order, and for each column the built-in base type (through one domain) when
-- that type is one rewind hashes natively, NULL otherwise (hashed through its text form).
SELECT n.nspname, c.relname, coalesce(pg_relation_size(c.oid), 0),
       coalesce(array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(array_agg(CASE WHEN b.typnamespace = 'pg_catalog'::regnamespace AND b.typtype = 'b'
                               THEN b.typname::text END ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL),
                '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
GROUP BY n.nspname, c.relname, c.oid
ORDER BY 1, 2
