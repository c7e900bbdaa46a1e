"""Row counts and order-independent content hashes, computed inside PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from journal.connection import connect


@cache
def load_sql(name: str) -> str:
    return resources.files("backup").joinpath("sql", name).read_text()


def list_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(load_sql("list_tables.sql"))]


def table_stat(conn: psycopg.Connection[Any], schema: str, name: str) -> tuple[int, str]:
    query = sql.SQL(load_sql("table_stats.sql")).format(table=sql.Identifier(schema, name))
    row = conn.execute(query).fetchone()
    assert row is not None
    digest = "".join(f"{int(v) % 2**64:016x}" for v in row[1:])
    return int(row[0]), digest


@contextmanager
def _reader(dsn: str, snapshot: str | None) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(dsn, autocommit=True, application_name="rewind backup")
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot is not None:
            # A utility statement takes no parameters; Literal quotes the value.
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        yield conn
    finally:
        conn.close()


def compute_stats(dsn: str, tables: list[tuple[str, str]], *, snapshot: str | None = None,
                  workers: int = 1, on_table: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """{"schema.table": {"rows": n, "hash": hex}}; with a snapshot id every worker sees exactly that
    snapshot. Largest-first scheduling would need sizes; tables are simply handed out in order."""
    result: dict[str, dict[str, Any]] = {}
    pending = list(tables)
    workers = max(1, min(workers, len(pending)))

    def work() -> None:
        with _reader(dsn, snapshot) as conn:
            while True:
                try:
                    schema, name = pending.pop(0)
                except IndexError:
                    return
                rows, digest = table_stat(conn, schema, name)
                result[f"{schema}.{name}"] = {"schema": schema, "name": name, "rows": rows, "hash": digest}
                if on_table:
                    on_table(f"{schema}.{name}")

    if not pending:
        return result
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(work) for _ in range(workers)]:
            f.result()
    return dict(sorted(result.items()))
