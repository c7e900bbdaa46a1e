"""The per-table content hash against the real cluster: it must change whenever any stored value
changes (including changes a type's own equality ignores), never with row order or session
settings, and come out the same when many tables share one query."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backup import content_hash
from backup.stats import BATCH_TABLES, compute_stats, list_tables, plan_batches

TYPES = r'''
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE t (
  i2 int2, i4 int4, i8 int8, d posint, n numeric, f float8, b bool, tx text, vc varchar(20), ch char(5),
  by bytea, u uuid, ts timestamp, tz timestamptz, dt date, iv interval, j jsonb, a int[], m mood, "odd ""col""" text
);
INSERT INTO t VALUES
  (1, 10, 100, 5, 1.0, 0.5, true, 'x', 'v', 'ab', '\x01', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '2025-01-02 03:04:05', '2025-01-02 03:04:05+00', '2025-01-02', '1 day', '{"k": 1.0}', '{1,2}', 'ok', 'o'),
  (2, 20, 200, 6, 2.5, '-0', false, 'y', 'w', 'cd', '\x02', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '2025-02-02 03:04:05', '2025-02-02 03:04:05+00', '2025-02-02', '24 hours', '{"k": 2}', '{3}', 'sad', NULL);
'''

# One UPDATE per kind of column, each a change that must show: some are equal under the type's
# own equality (1.0 = 1.00, -0 = 0, '1 day' = '24 hours', jsonb 1.0 = 1.00, array bounds).
CHANGES = [
    "UPDATE t SET i2 = 3 WHERE i2 = 1", "UPDATE t SET i4 = 11 WHERE i4 = 10", "UPDATE t SET i8 = -100 WHERE i8 = 100",
    "UPDATE t SET d = 7 WHERE d = 5", "UPDATE t SET n = 1.00 WHERE i4 = 10", "UPDATE t SET f = 0 WHERE i4 = 20",
    "UPDATE t SET b = NOT b WHERE i4 = 10", "UPDATE t SET tx = 'x ' WHERE i4 = 10",
    "UPDATE t SET vc = NULL WHERE i4 = 10",
    "UPDATE t SET ch = 'ax' WHERE i4 = 10", "UPDATE t SET by = '\\x0100' WHERE i4 = 10",
    "UPDATE t SET u = 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' WHERE i4 = 10",
    "UPDATE t SET ts = ts + interval '1 microsecond' WHERE i4 = 10",
    "UPDATE t SET tz = tz + interval '1 second' WHERE i4 = 10", "UPDATE t SET dt = dt + 1 WHERE i4 = 10",
    "UPDATE t SET iv = '24 hours' WHERE i4 = 10", "UPDATE t SET j = '{\"k\": 1.00}' WHERE i4 = 10",
    "UPDATE t SET a = '[0:1]={1,2}' WHERE i4 = 10", "UPDATE t SET m = 'sad' WHERE i4 = 10",
    "UPDATE t SET \"odd \"\"col\"\"\" = '' WHERE i4 = 20",
    # Values swapped between two columns of one row, and between two rows of one column.
    "UPDATE t SET tx = vc, vc = tx WHERE i4 = 10", "UPDATE t SET tx = CASE tx WHEN 'x' THEN 'y' ELSE 'x' END",
]


def _hash(dsn: str, table: str = "public.t", method: str = content_hash.V2) -> tuple[int, str]:
    with psycopg.connect(dsn) as c:
        tables = list_tables(c)
    stats = compute_stats(dsn, tables, method=method)[table]
    return stats["rows"], stats["hash"]


@pytest.fixture
def typed(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(TYPES)
    return dsn


@pytest.mark.parametrize("change", CHANGES)
def test_any_changed_value_changes_the_hash(typed: str, conn: psycopg.Connection[Any], change: str) -> None:
    before = _hash(typed)
    conn.execute(change)
    after = _hash(typed)
    assert after[0] == before[0] and after[1] != before[1]


def test_row_order_and_session_settings_do_not_matter(typed: str, conn: psycopg.Connection[Any]) -> None:
    before = _hash(typed)
    conn.execute("CREATE TABLE t2 (LIKE t); INSERT INTO t2 SELECT * FROM t ORDER BY i4 DESC; DROP TABLE t;"
                 "ALTER TABLE t2 RENAME TO t")
    # A client in another time zone with other output styles sees other text for the same values,
    # and a function earlier on its search path must not stand in for a hash function.
    conn.execute("CREATE FUNCTION public.hashint4extended(int, bigint) RETURNS bigint LANGUAGE sql "
                 "AS 'SELECT 0::bigint'")
    other = make_conninfo(typed, options="-c TimeZone=Asia/Kolkata -c DateStyle=SQL,DMY "
                                         "-c IntervalStyle=iso_8601 -c extra_float_digits=0 "
                                         "-c bytea_output=escape -c search_path=public,pg_catalog")
    assert _hash(other) == before


def test_versions_differ_and_v1_still_computes(typed: str) -> None:
    rows1, v1 = _hash(typed, method=content_hash.V1)
    rows2, v2 = _hash(typed)
    assert rows1 == rows2 == 2 and len(v1) == 32 and len(v2) == 16


def test_many_small_tables_share_queries_with_the_same_results(dsn: str, conn: psycopg.Connection[Any]) -> None:
    count = BATCH_TABLES + 5
    for i in range(count):
        conn.execute(sql.SQL("CREATE TABLE {} (id int, v text); INSERT INTO {} SELECT g, 'v' || g "
                             "FROM generate_series(1, {}) g").format(
            sql.Identifier(f"s{i}"), sql.Identifier(f"s{i}"), sql.Literal(i % 7)))
    conn.execute("CREATE TABLE empty_columns (); INSERT INTO empty_columns DEFAULT VALUES")
    with psycopg.connect(dsn) as c:
        tables = list_tables(c)
    batches = plan_batches(tables)
    assert len(batches) == 2 and sum(len(b) for b in batches) == count + 1
    together = compute_stats(dsn, tables, workers=2)
    one_by_one = {}
    for t in tables:
        one_by_one.update(compute_stats(dsn, [t]))
    assert together == one_by_one
    assert together["public.s6"]["rows"] == 6 and together["public.empty_columns"]["rows"] == 1
