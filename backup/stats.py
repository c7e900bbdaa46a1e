"""Row counts and content hashes of every table, computed inside PostgreSQL by a few readers
that share one snapshot.

The largest tables go first and alone, so PostgreSQL can scan each with parallel workers; small
tables go many to a query, since a round trip costs more than hashing a few rows. A snapshot
being taken is hashed by the transaction that exported it (stats_in_transaction): no reader to
connect, and no doubt about which snapshot it saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from backup import content_hash
from backup.content_hash import Table
from journal.connection import connect

# Below PostgreSQL's min_parallel_table_scan_size a table gets no parallel workers anyway.
SOLO_BYTES = 8 * 1024 * 1024
BATCH_TABLES = 200


@cache
def load_sql(name: str) -> str:
    return resources.files("backup").joinpath("sql", name).read_text()


def list_tables(conn: psycopg.Connection[Any]) -> list[Table]:
    return [Table(r[0], r[1], int(r[2]), tuple(zip(r[3], r[4], strict=True)))
            for r in conn.execute(load_sql("list_tables.sql"))]


def plan_batches(tables: list[Table]) -> list[list[Table]]:
    """Largest first; a big table alone, small ones together up to SOLO_BYTES or BATCH_TABLES."""
    batches: list[list[Table]] = []
    small: list[Table] = []
    small_bytes = 0
    for t in sorted(tables, key=lambda t: (-t.bytes, t.key)):
        if t.bytes >= SOLO_BYTES:
            batches.append([t])
            continue
        small.append(t)
        small_bytes += t.bytes
        if small_bytes >= SOLO_BYTES or len(small) >= BATCH_TABLES:
            batches.append(small)
            small, small_bytes = [], 0
    if small:
        batches.append(small)
    return batches


def prepare_session(conn: psycopg.Connection[Any], method: str, parallel: bool) -> None:
    """The session settings a reader of `method` hashes under (text forms, search path), and
    whether PostgreSQL may add parallel workers to its scans."""
    settings = content_hash.session_settings(method)
    if settings:
        conn.execute(settings)
    if not parallel:
        conn.execute("SET max_parallel_workers_per_gather = 0")


def hash_batches(conn: psycopg.Connection[Any], batches: Iterable[list[Table]], method: str,
                 result: dict[str, dict[str, Any]]) -> None:
    """Count and hash each batch of tables on one connection (prepared by prepare_session, in the
    snapshot wanted), into result."""
    for batch in batches:
        for row in conn.execute(content_hash.batch_query(batch, method)):
            t = batch[row[0]]
            result[t.key] = {"schema": t.schema, "name": t.name, "rows": int(row[1]),
                             "hash": content_hash.digest(row[2:])}


def stats_in_transaction(conn: psycopg.Connection[Any], tables: list[Table], *, method: str = content_hash.DEFAULT,
                         parallel: bool = True) -> dict[str, dict[str, Any]]:
    """compute_stats on a connection already inside the transaction whose snapshot is wanted
    (such as the one that exported it): no second connection, no snapshot to import."""
    result: dict[str, dict[str, Any]] = {}
    prepare_session(conn, method, parallel)
    hash_batches(conn, plan_batches(tables), method, result)
    return dict(sorted(result.items()))


@contextmanager
def _reader(dsn: str, snapshot: str | None, method: str, parallel: bool) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(dsn, autocommit=True, application_name="rewind backup")
    try:
        prepare_session(conn, method, parallel)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot is not None:
            # A utility statement takes no parameters; Literal quotes the value.
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        yield conn
    finally:
        conn.close()


def compute_stats(dsn: str, tables: list[Table], *, method: str = content_hash.DEFAULT,
                  snapshot: str | None = None, workers: int = 1,
                  parallel: bool = True) -> dict[str, dict[str, Any]]:
    """{"schema.table": {"rows": n, "hash": hex}}; with a snapshot id every reader sees exactly that
    snapshot. parallel=False keeps PostgreSQL from adding parallel workers to a reader's scans."""
    result: dict[str, dict[str, Any]] = {}
    pending = deque(plan_batches(tables))
    workers = max(1, min(workers, len(pending)))

    def taken() -> Iterator[list[Table]]:
        while True:
            try:
                yield pending.popleft()
            except IndexError:
                return

    def work() -> None:
        with _reader(dsn, snapshot, method, parallel) as conn:
            hash_batches(conn, taken(), method, result)

    if not pending:
        return result
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(work) for _ in range(workers)]:
            f.result()
    return dict(sorted(result.items()))
