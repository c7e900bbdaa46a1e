"""Order-independent content hashes of tables, computed inside PostgreSQL.

A manifest names the method its hashes were made with (no name: v1), and verify recomputes with
that method, so snapshots taken by an older rewind still verify.

- v1: the sums, as numeric, of two hashtextextended of each row's text form. Every value goes
  through its type's output function and the planner inlines the row text into both sums, so
  it costs about twice a COPY of the table.
- v2: each column is hashed by its type's own extended hash function where that function tells
  every distinct value apart (integers, text under the C collation, uuid, timestamp, ...), and
  through its text form otherwise (numeric would hash 1.0 and 1.00 alike, arrays ignore their
  bounds, jsonb normalises numbers). The column hashes are seeded by position, so values swapped
  between columns change the row, XORed, and hashed once more into a 64-bit row hash so that no
  linear relation between rows survives; the digest is the sum of the row hashes modulo 2^64.
  On pgbench_accounts (2M rows, one backend) v2 takes 0.35-0.45 s against v1's 2.8 s and a
  COPY to /dev/null's 0.65 s. Text forms depend on session settings, which a v2 connection pins.

The extended hash functions are the ones behind hash partitioning, which PostgreSQL keeps
stable across versions and platforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources

from psycopg import sql

V1 = "v1"
V2 = "v2"
METHODS = (V1, V2)
DEFAULT = V2

# Built-in types whose extended hash function is injective enough to stand for the value: equal
# hashes only for identical values (bpchar ignores trailing blanks, as its equality does, and
# char(n) pads every value anyway). The function name, and the cast from a domain to its base.
_NATIVE: dict[str, tuple[str, str]] = {
    "int2": ("hashint2extended", "int2"),
    "int4": ("hashint4extended", "int4"),
    "int8": ("hashint8extended", "int8"),
    "oid": ("hashoidextended", "oid"),
    "text": ("hashtextextended", "text"),
    "varchar": ("hashtextextended", "text"),
    "bpchar": ("hashbpcharextended", "bpchar"),
    "name": ("hashnameextended", "name"),
    "char": ("hashcharextended", '"char"'),
    "uuid": ("uuid_hash_extended", "uuid"),
    "timestamp": ("timestamp_hash_extended", "timestamp"),
    "time": ("time_hash_extended", "time"),
    "inet": ("hashinetextended", "inet"),
    "macaddr": ("hashmacaddrextended", "macaddr"),
    "macaddr8": ("hashmacaddr8extended", "macaddr8"),
}
_COLLATED = frozenset({"text", "varchar", "bpchar", "name"})

# Every setting that changes a built-in type's text form; and only pg_catalog on the search path,
# so no function in the database can stand in for the hash functions named here.
_V2_SETTINGS = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
                "SET extra_float_digits = 1; SET bytea_output = 'hex'; SET lc_monetary = 'C'; "
                "SET search_path = pg_catalog")


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    bytes: int
    # (column name, built-in base type or None) in column order.
    columns: tuple[tuple[str, str | None], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"


@cache
def _v1_sql() -> str:
    return resources.files("backup").joinpath("sql", "table_hash_v1.sql").read_text()


def session_settings(method: str) -> str | None:
    return _V2_SETTINGS if method == V2 else None


def _column_hash(position: int, name: str, base: str | None) -> sql.Composable:
    seed = sql.Literal(position)
    col = sql.Identifier(name)
    if base in _NATIVE:
        func, cast = _NATIVE[base]
        value = sql.SQL("{}::{}").format(col, sql.SQL(cast))
        if base in _COLLATED:
            value = sql.SQL('{} COLLATE "C"').format(value)
        return sql.SQL("coalesce({}({}, {}), {})").format(sql.SQL(func), value, seed, seed)
    return sql.SQL('coalesce(hashtextextended({}::text COLLATE "C", {}), {})').format(col, seed, seed)


def table_query(table: Table, method: str) -> sql.Composed:
    """One row: count, then the method's hash aggregates."""
    ident = sql.Identifier(table.schema, table.name)
    if method == V1:
        return sql.SQL(_v1_sql()).format(table=ident)
    parts = [_column_hash(i, name, base) for i, (name, base) in enumerate(table.columns, start=1)]
    row = sql.SQL(" # ").join(parts) if parts else sql.SQL("0")
    return sql.SQL("SELECT count(*), sum(hashint8extended({}, 0)) FROM ONLY {}").format(row, ident)


def batch_query(tables: Sequence[Table], method: str) -> sql.Composed:
    """One round trip for many tables: (index, count, hash aggregates...) per table."""
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, q.* FROM ({}) AS q").format(sql.Literal(i), table_query(t, method))
        for i, t in enumerate(tables))


def digest(sums: Sequence[Decimal | int | None]) -> str:
    """Each aggregate (numeric, NULL for an empty table) as 16 hex digits, modulo 2^64."""
    return "".join(f"{int(v or 0) % 2**64:016x}" for v in sums)
