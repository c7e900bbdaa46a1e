-- Row count and an order-independent content hash: the sums (as numeric, so nothing overflows)
-- of two 64-bit hashes of each row's text. Equal multisets of rows give equal sums whatever the
-- physical order, and unlike XOR duplicates do not cancel. hashtextextended is the hash behind
-- hash partitioning, which PostgreSQL keeps stable across versions and platforms.
SELECT count(*),
       coalesce(sum(hashtextextended(r, 0)::numeric), 0),
       coalesce(sum(hashtextextended(r, 7919)::numeric), 0)
FROM (SELECT t::text AS r FROM {table} AS t) AS rows
