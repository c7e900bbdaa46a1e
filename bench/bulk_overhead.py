"""Capture overhead on bulk statements: a 1M-row INSERT ... SELECT, UPDATE and DELETE, tracked vs untracked.

One throwaway cluster with durable settings (fsync, synchronous_commit and full_page_writes on),
one database with rewind installed. Every measurement gets a fresh table shaped like
pgbench_accounts (aid int primary key, bid int, abalance int, filler char(84)); the tracked side's
table is tracked with journal.track() before its INSERT. Each timed step runs in autocommit (the
commit and its WAL flush are included) after a VACUUM and a CHECKPOINT:

    INSERT INTO t SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, N) g   -- empty table
    UPDATE t SET abalance = abalance + 1                                               -- all N rows
    DELETE FROM t                                                                      -- all N rows

The UPDATE has no target: plain tables capture UPDATEs with a row trigger, the light path for
one-row OLTP statements, so a bulk UPDATE pays a trigger call per row; it is measured so that
the price is known.

The sides alternate within each repeat (order flipped every repeat); medians of --repeat runs.

    .venv/bin/python bench/bulk_overhead.py                  # full: 1,000,000 rows, 3 repeats
    .venv/bin/python bench/bulk_overhead.py --rows 20000 --repeat 1    # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

import psycopg

import journal
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, finish

_CREATE = "CREATE TABLE {t} (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84))"
_INSERT = "INSERT INTO {t} SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, %s) g"
_UPDATE = "UPDATE {t} SET abalance = abalance + 1"
_DELETE = "DELETE FROM {t}"


def settle(conn: psycopg.Connection, table: str, *, journal_too: bool) -> None:
    conn.execute(f"VACUUM ANALYZE {table}")
    if journal_too:
        conn.execute("VACUUM rewind.change")
    conn.execute("CHECKPOINT")


def timed(conn: psycopg.Connection, query: str, params: Sequence[object] = ()) -> tuple[float, int]:
    t0 = time.perf_counter()
    cur = conn.execute(query, params)
    return time.perf_counter() - t0, cur.rowcount


def measure(dsn: str, table: str, rows: int, tracked: bool) -> tuple[float, float, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_CREATE.format(t=table))
        if tracked:
            journal.track(dsn, [f"public.{table}"])
        settle(conn, table, journal_too=True)
        t_ins, n = timed(conn, _INSERT.format(t=table), (rows,))
        assert n == rows, (n, rows)
        settle(conn, table, journal_too=True)
        t_upd, n = timed(conn, _UPDATE.format(t=table))
        assert n == rows, (n, rows)
        settle(conn, table, journal_too=True)
        t_del, n = timed(conn, _DELETE.format(t=table))
        assert n == rows, (n, rows)
        if tracked:
            got = conn.execute("SELECT count(*) FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl "
                               "WHERE k.table_name = %s", (table,)).fetchone()
            assert got is not None and got[0] == 3 * rows, (got, rows)
        conn.execute(f"DROP TABLE {table}")
    return t_ins, t_upd, t_del


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows inserted and deleted (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per side; medians are reported (default 3)")
    args = p.parse_args(argv)

    settings = dict(BENCH_SETTINGS)
    print("bulk_overhead: INSERT ... SELECT and DELETE of all rows, untracked vs tracked table")
    print(f"  {args.rows:,} rows, {args.repeat} repeat(s), fresh table per measurement, "
          "VACUUM + CHECKPOINT before each timed step, autocommit (commit included)")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + " (durable settings)")
    sys.stdout.flush()

    with Cluster(settings=settings) as cluster:
        dsn = cluster.create_database("bench_bulk")
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        print(f"  PostgreSQL {row[0] if row else '?'}, {os.cpu_count()} CPUs, load average at start "
              f"{os.getloadavg()[0]:.2f}")
        journal.init(dsn)

        times: dict[str, dict[str, list[float]]] = {
            s: {"insert": [], "update": [], "delete": []} for s in ("untracked", "tracked")}
        print()
        print(f"{'repeat':>6}  {'side':<9}  {'INSERT s':>9}  {'UPDATE s':>9}  {'DELETE s':>9}")
        for rep in range(1, args.repeat + 1):
            order = ["untracked", "tracked"] if rep % 2 == 1 else ["tracked", "untracked"]
            for side in order:
                t_ins, t_upd, t_del = measure(dsn, f"bulk_{side}_{rep}", args.rows, side == "tracked")
                times[side]["insert"].append(t_ins)
                times[side]["update"].append(t_upd)
                times[side]["delete"].append(t_del)
                print(f"{rep:>6}  {side:<9}  {t_ins:>9.3f}  {t_upd:>9.3f}  {t_del:>9.3f}", flush=True)

        med = {s: {op: statistics.median(v) for op, v in ops.items()} for s, ops in times.items()}
        ins_ratio = med["tracked"]["insert"] / med["untracked"]["insert"]
        upd_ratio = med["tracked"]["update"] / med["untracked"]["update"]
        del_ratio = med["tracked"]["delete"] / med["untracked"]["delete"]
        print()
        print(f"{'median':<9}  {'untracked s':>11}  {'tracked s':>9}  {'ratio':>6}  target")
        print(f"{'INSERT':<9}  {med['untracked']['insert']:>11.3f}  {med['tracked']['insert']:>9.3f}  "
              f"{ins_ratio:>6.2f}  <= 3")
        print(f"{'UPDATE':<9}  {med['untracked']['update']:>11.3f}  {med['tracked']['update']:>9.3f}  "
              f"{upd_ratio:>6.2f}  (none: a row trigger, see above)")
        print(f"{'DELETE':<9}  {med['untracked']['delete']:>11.3f}  {med['tracked']['delete']:>9.3f}  "
              f"{del_ratio:>6.2f}  <= 10")
        finish("tracked/untracked INSERT time <= 3, DELETE time <= 10",
               {"tracked/untracked INSERT time": ins_ratio, "tracked/untracked DELETE time": del_ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
