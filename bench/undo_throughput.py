"""Undo throughput: undoing a 1M-row DELETE, against reloading the same rows with COPY.

One throwaway cluster with durable settings (fsync, synchronous_commit and full_page_writes on).
Each repeat gets a fresh database (so a fresh journal) with rewind installed, and in it:

1. a table shaped like pgbench_accounts (aid int primary key, bid int, abalance int,
   filler char(84)) loaded with N rows, then tracked;
2. the rows exported once with ``COPY t TO STDOUT`` into memory;
3. ``DELETE FROM t`` by a session with ``SET rewind.actor = 'bench-agent'``;
4. timed, after VACUUM ANALYZE and CHECKPOINT:
   - undo: ``restore.undo(dsn, Selection(actors=["bench-agent"]), max_rows=None)``, which plans,
     locks, applies, journals its own re-inserts and verifies them before committing;
   - baseline: ``COPY t_copy FROM STDIN`` of the exported rows into an empty, untracked copy of
     the table with the same primary key (autocommit, commit included).
   The order of the two alternates every repeat.

Medians of --repeat runs. --profile adds one more, untimed-for-the-result round in which the undo
runs through restore.undo's own code with a connection wrapper that times every statement (and,
with --explain, replaces each DML statement by EXPLAIN (ANALYZE, BUFFERS) of it), to show where
the time goes.

    .venv/bin/python bench/undo_throughput.py                     # full: 1,000,000 rows, 3 repeats
    .venv/bin/python bench/undo_throughput.py --rows 20000 --repeat 1 --profile   # smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

import journal
import restore
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, finish

ACTOR = "bench-agent"
_DDL = "CREATE TABLE {t} (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84))"
_LOAD = "INSERT INTO {t} SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, %s) g"
_CHUNK = 1 << 20


@dataclass
class Round:
    undo_s: float
    copy_s: float
    undo_rows: int
    journal_rows: int


def settle(conn: psycopg.Connection, *tables: str) -> None:
    for t in tables:
        conn.execute(f"VACUUM ANALYZE {t}")
    conn.execute("CHECKPOINT")


def setup(cluster: Cluster, dbname: str, rows: int) -> tuple[str, bytes]:
    """A fresh database with the loaded, tracked table, its rows exported, and then deleted."""
    dsn = cluster.create_database(dbname)
    journal.init(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DDL.format(t="t"))
        conn.execute(_DDL.format(t="t_copy"))
        conn.execute(_LOAD.format(t="t"), (rows,))
        journal.track(dsn, ["public.t"])
        buf = bytearray()
        with conn.cursor().copy("COPY t TO STDOUT") as copy:
            for block in copy:
                buf += block
        settle(conn, "t")
        conn.execute(sql.SQL("SET rewind.actor = {}").format(sql.Literal(ACTOR)))
        deleted = conn.execute("DELETE FROM t").rowcount
        assert deleted == rows, (deleted, rows)
    return dsn, bytes(buf)


def time_copy(dsn: str, data: bytes, rows: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        settle(conn, "t_copy")
        t0 = time.perf_counter()
        with conn.cursor().copy("COPY t_copy FROM STDIN") as copy:
            for i in range(0, len(data), _CHUNK):
                copy.write(data[i:i + _CHUNK])
        elapsed = time.perf_counter() - t0
        got = conn.execute("SELECT count(*) FROM t_copy").fetchone()
        assert got is not None and got[0] == rows, (got, rows)
    return elapsed


def time_undo(dsn: str, rows: int) -> tuple[float, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        settle(conn, "t", "rewind.change", "rewind.tx")
    t0 = time.perf_counter()
    result = restore.undo(dsn, journal.Selection(actors=[ACTOR]), max_rows=None)
    elapsed = time.perf_counter() - t0
    assert result.applied and result.rows == rows, (result.applied, result.rows, rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute("SELECT count(*) FROM t").fetchone()
        assert got is not None and got[0] == rows, (got, rows)
    return elapsed, result.rows


def journal_rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute("SELECT count(*) FROM rewind.change").fetchone()
        return int(got[0]) if got else 0


def check_same(dsn: str) -> None:
    """The undone table holds exactly the reloaded rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        got = conn.execute("SELECT (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE t_copy) a) + "
                           "(SELECT count(*) FROM (TABLE t_copy EXCEPT ALL TABLE t) b)").fetchone()
        assert got is not None and got[0] == 0, f"undo and COPY reload differ in {got} rows"


# ------------------------------------------------------------------------------------ profiling


@dataclass
class Probe:
    """Wraps the undo's connection: times every execute, attributed to the restore/ function that
    issued it; with explain, DML runs as EXPLAIN (ANALYZE, BUFFERS) of itself (same effect)."""

    conn: psycopg.Connection
    explain: bool = False
    records: list[tuple[str, str, float]] = field(default_factory=list)
    plans: list[tuple[str, str, str]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        text = query.as_string(self.conn) if isinstance(query, sql.Composable) else str(query)
        head = " ".join(text.split())[:90]
        where = _caller()
        verb = text.lstrip().split(None, 1)[0].upper() if text.strip() else ""
        if self.explain and verb in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in text.upper():
            t0 = time.perf_counter()
            cur = self.conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + sql.SQL(text), params, **kw)
            plan = "\n".join(r[0] for r in cur.fetchall())
            self.records.append((where, head, time.perf_counter() - t0))
            self.plans.append((where, head, plan))
            return Explained(plan)
        t0 = time.perf_counter()
        cur = self.conn.execute(query, params, **kw)
        self.records.append((where, head, time.perf_counter() - t0))
        return cur


_NODE_ROWS = re.compile(r"actual time=\S+ rows=(\d+)")


@dataclass
class Explained:
    """What restore/ reads from the cursor of a DML statement that ran as EXPLAIN ANALYZE: the
    rows it touched, which the plan shows as the rows its ModifyTable node's input produced."""

    plan: str

    @property
    def rowcount(self) -> int:
        counts = _NODE_ROWS.findall(self.plan)
        return int(counts[1]) if len(counts) > 1 else 0


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if "/restore/" in path:
            return f"{path.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def profile_undo(dsn: str, explain: bool) -> None:
    from journal.schema import require_installed
    from restore.planner import Policy
    from restore.undo import _undo_in

    with psycopg.connect(dsn, autocommit=True) as conn:
        settle(conn, "t", "rewind.change", "rewind.tx")
    probe: Probe
    with journal.connect(dsn, autocommit=False) as raw:
        probe = Probe(raw, explain=explain)
        require_installed(raw)
        t0 = time.perf_counter()
        with raw.transaction():
            result = _undo_in(probe, journal.Selection(actors=[ACTOR]), Policy.ABORT, None, None, False)  # type: ignore[arg-type]
            t_commit = time.perf_counter()
        t_end = time.perf_counter()
    assert result.applied
    label = "EXPLAIN ANALYZE" if explain else "timed"
    in_sql = sum(r[2] for r in probe.records)
    print(f"\nprofile ({label}): undo of {result.rows:,} rows, total {t_end - t0:.3f} s "
          f"(statements {in_sql:.3f} s, client side {t_commit - t0 - in_sql:.3f} s, "
          f"commit {t_end - t_commit:.3f} s)")
    by_phase: dict[str, float] = defaultdict(float)
    for where, _head, secs in probe.records:
        by_phase[where] += secs
    print(f"  {'phase (issuing function)':<34} {'s':>8}")
    for where, secs in sorted(by_phase.items(), key=lambda kv: -kv[1]):
        print(f"  {where:<34} {secs:>8.3f}")
    print(f"  {'slowest statements':<34} {'s':>8}")
    for where, head, secs in sorted(probe.records, key=lambda r: -r[2])[:10]:
        print(f"  {where:<34} {secs:>8.3f}  {head}")
    for where, head, plan in probe.plans:
        print(f"\n  -- {where}: {head}")
        for line in plan.splitlines():
            print(f"     {line}")


# ----------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows deleted and undone (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=3, help="measurements; medians are reported (default 3)")
    p.add_argument("--profile", action="store_true", help="one extra round with per-statement timing of the undo")
    p.add_argument("--explain", action="store_true",
                   help="with --profile: also one round running the undo's DML as EXPLAIN (ANALYZE, BUFFERS)")
    args = p.parse_args(argv)

    settings = dict(BENCH_SETTINGS)
    print("undo_throughput: undo of a DELETE of all rows vs COPY reload of the same rows")
    print(f"  {args.rows:,} rows, {args.repeat} repeat(s), fresh database per repeat, "
          "VACUUM ANALYZE + CHECKPOINT before each timed step")
    print("  undo: restore.undo(Selection(actors=['bench-agent']), max_rows=None): plan + lock + apply + "
          "its own journaling + verification, one transaction")
    print("  COPY: COPY FROM STDIN of the rows exported before the delete, into an empty untracked "
          "table with the same primary key")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + " (durable settings)")
    sys.stdout.flush()

    rounds: list[Round] = []
    with Cluster(settings=settings) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        print(f"  PostgreSQL {row[0] if row else '?'}, {os.cpu_count()} CPUs, load average at start "
              f"{os.getloadavg()[0]:.2f}")
        print()
        print(f"{'repeat':>6}  {'undo s':>8}  {'COPY s':>8}  {'undo/COPY':>9}  {'journal rows':>12}")
        for rep in range(1, args.repeat + 1):
            dbname = f"bench_undo_{rep}"
            dsn, data = setup(cluster, dbname, args.rows)
            if rep % 2 == 1:
                copy_s = time_copy(dsn, data, args.rows)
                undo_s, n = time_undo(dsn, args.rows)
            else:
                undo_s, n = time_undo(dsn, args.rows)
                copy_s = time_copy(dsn, data, args.rows)
            check_same(dsn)
            r = Round(undo_s=undo_s, copy_s=copy_s, undo_rows=n, journal_rows=journal_rows(dsn))
            rounds.append(r)
            print(f"{rep:>6}  {undo_s:>8.3f}  {copy_s:>8.3f}  {undo_s / copy_s:>9.2f}  {r.journal_rows:>12,}",
                  flush=True)
            del data
            cluster.drop_database(dbname)

        if args.profile:
            for explain in (False, True) if args.explain else (False,):
                dsn, data = setup(cluster, f"bench_undo_profile_{int(explain)}", args.rows)
                del data
                profile_undo(dsn, explain)
                cluster.drop_database(f"bench_undo_profile_{int(explain)}")

    undo_med = statistics.median(r.undo_s for r in rounds)
    copy_med = statistics.median(r.copy_s for r in rounds)
    ratio = undo_med / copy_med
    print()
    print(f"median undo time: {undo_med:.3f} s ({args.rows / undo_med:,.0f} rows/s)")
    print(f"median COPY time: {copy_med:.3f} s ({args.rows / copy_med:,.0f} rows/s)")
    finish("undo time / COPY time <= 5", {"undo/COPY time": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
