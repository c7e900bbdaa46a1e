"""Capture overhead on OLTP: pgbench TPC-B against an untracked and a tracked database.

Both databases live in one throwaway cluster with durable settings (fsync, synchronous_commit and
full_page_writes on). They are initialised identically with ``pgbench -i``; in the tracked one
``rewind init`` runs and all four pgbench tables are tracked. Rounds interleave the two databases
(the order alternates each round, so drift in the machine's speed falls on both sides), each run
preceded by a VACUUM of the pgbench tables and a CHECKPOINT. The result is the ratio of the
median TPS of each side.

    .venv/bin/python bench/capture_overhead.py                    # full: scale 10, 3 x 20 s each
    .venv/bin/python bench/capture_overhead.py --seconds 3 --rounds 1 --scale 1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import psycopg

import journal
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, finish

# Durable, production-like settings instead of the dev defaults (fsync/full_page_writes off).

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  re.M)


def pg_env(cluster: Cluster, dbname: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=cluster.host, PGPORT=str(cluster.port), PGUSER="postgres",
               PGPASSWORD=cluster.password, PGDATABASE=dbname)
    return env


def pgbench(cluster: Cluster, dbname: str, args: Sequence[str]) -> str:
    proc = subprocess.run([cluster.bin("pgbench"), *args], env=pg_env(cluster, dbname),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} on {dbname} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def prepare(cluster: Cluster, dbname: str) -> None:
    """VACUUM the pgbench tables (pgbench's own pre-run step, minus its TRUNCATE of the history,
    which on the tracked side would journal the history rows) and CHECKPOINT."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        for table in PGBENCH_TABLES:
            conn.execute(f"VACUUM {table}")
        conn.execute("CHECKPOINT")


def run_once(cluster: Cluster, dbname: str, clients: int, seconds: int, protocol: str) -> float:
    prepare(cluster, dbname)
    out = pgbench(cluster, dbname, ["-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds),
                                    "-M", protocol])
    m = _TPS.search(out)
    if m is None:
        raise RuntimeError(f"no TPS in pgbench output:\n{out}")
    return float(m.group(1))


def journal_size(cluster: Cluster, dbname: str) -> tuple[int, str]:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        row = conn.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('rewind.change')) "
                           "FROM rewind.change").fetchone()
        assert row is not None
        return int(row[0]), str(row[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument("--clients", type=int, default=2, help="pgbench clients, one thread each (default 2)")
    p.add_argument("--seconds", type=int, default=20, help="duration of each pgbench run (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--protocol", choices=["simple", "extended", "prepared"], default="simple",
                   help="pgbench -M query mode (default simple, pgbench's default)")
    args = p.parse_args(argv)

    settings = dict(BENCH_SETTINGS)
    print("capture_overhead: pgbench TPC-B, untracked vs tracked database, interleaved rounds")
    print(f"  scale {args.scale}, {args.clients} clients, {args.seconds} s per run, {args.rounds} round(s), "
          f"-M {args.protocol}")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + " (durable settings)")
    sys.stdout.flush()

    with Cluster(settings=settings) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        print(f"  PostgreSQL {row[0] if row else '?'}, {os.cpu_count()} CPUs, load average at start "
              f"{os.getloadavg()[0]:.2f}")
        sides = {"untracked": "bench_untracked", "tracked": "bench_tracked"}
        for dbname in sides.values():
            cluster.create_database(dbname)
            t0 = time.perf_counter()
            pgbench(cluster, dbname, ["-i", "-q", "-s", str(args.scale)])
            print(f"  pgbench -i -s {args.scale} on {dbname}: {time.perf_counter() - t0:.1f} s")
        tracked_dsn = cluster.dsn(sides["tracked"])
        journal.init(tracked_dsn)
        tracked = journal.track(tracked_dsn, [f"public.{t}" for t in PGBENCH_TABLES])
        print("  tracked: " + ", ".join(f"{t.table} (key {','.join(t.key_columns) or 'none'})" for t in tracked))
        sys.stdout.flush()

        tps: dict[str, list[float]] = {side: [] for side in sides}
        print()
        print(f"{'round':>5}  {'side':<9}  {'TPS':>10}")
        for rnd in range(1, args.rounds + 1):
            order = ["untracked", "tracked"] if rnd % 2 == 1 else ["tracked", "untracked"]
            for side in order:
                value = run_once(cluster, sides[side], args.clients, args.seconds, args.protocol)
                tps[side].append(value)
                print(f"{rnd:>5}  {side:<9}  {value:>10.1f}", flush=True)

        med = {side: statistics.median(values) for side, values in tps.items()}
        changes, size = journal_size(cluster, sides["tracked"])
        print()
        print(f"{'side':<9}  {'median TPS':>10}  {'runs':<}")
        for side in sides:
            print(f"{side:<9}  {med[side]:>10.1f}  " + ", ".join(f"{v:.1f}" for v in tps[side]))
        paired = [tr / un for tr, un in zip(tps["tracked"], tps["untracked"], strict=True)]
        print("per-round tracked/untracked: " + ", ".join(f"{r:.2f}" for r in paired)
              + f" (median {statistics.median(paired):.2f}; a wide spread means the machine was noisy)")
        print(f"journal after the runs: {changes} change rows, rewind.change {size}")
        ratio = med["tracked"] / med["untracked"]
        finish("tracked/untracked TPS >= 0.80", {"tracked/untracked TPS": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
