-- Row count and an order-independent content hash: the sums of the two halves of each row's
-- md5 (as signed 32-bit integers, summed as bigint so nothing overflows). Equal multisets of
-- rows give equal sums whatever the physical order, and unlike XOR duplicates do not cancel.
SELECT count(*),
       coalesce(sum(('x' || substr(h, 1, 8))::bit(32)::int), 0),
       coalesce(sum(('x' || substr(h, 9, 8))::bit(32)::int), 0),
       coalesce(sum(('x' || substr(h, 17, 8))::bit(32)::int), 0),
       coalesce(sum(('x' || substr(h, 25, 8))::bit(32)::int), 0)
FROM (SELECT md5(t::text) AS h FROM {table} AS t) AS rows
