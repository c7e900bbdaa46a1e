"""Capture cost counted in instructions: pgbench TPC-B transactions in one backend under callgrind.

pgbench TPS on this shared 2-core machine moves by several points from run to run, and the CPU
that other tenants leave can change within a run, so a change to the capture path worth a few
percent cannot be told from noise there. Valgrind's callgrind counts the instructions a process
executes, which do not depend on what else the machine is doing: the same binaries, data and
workload give the same count from run to run. This is the instrument for comparing capture
designs; capture_overhead.py's TPS ratio stays the figure the target is set on.

Five databases, each `pgbench -i` at --scale: untracked; tracked by Rewind (journal mode, all four
pgbench tables); "norecord", the same capture without its transaction record (common.NO_TX_RECORD);
and the two reference audit triggers of capture_overhead.py --reference
(sql/reference_triggers.sql): "generic" (to_jsonb of OLD and NEW) and "lean" (the rows' text, no
index). Each --variant FILE adds a tracked database on which FILE ran after `rewind track`: a
capture design to count beside the shipped one (bench/sql/variants holds the ones counted for issue
#2's transaction record, each saying what it measured). Each gets --warmup transactions from two
pgbench clients at full speed first, so the journal is past its first BRIN range and every table
has grown as in a running system, then a VACUUM (what autovacuum would have done). The server is
then restarted under `valgrind --tool=callgrind --trace-children=yes` (autovacuum off, so no worker
changes the state between sides), and on each database one pgbench client runs 10 transactions (the
warm-up of a new session's caches), then 200, then 200 + --transactions, each as its own
connection. Every backend writes its instruction count when its connection ends; the count per
transaction is the difference of the last two runs over --transactions, which cancels connection
start and end.

Needs valgrind (Debian: apt-get install valgrind). Takes about two minutes.

    .venv/bin/python bench/capture_instructions.py                 # scale 10, 500 transactions
    .venv/bin/python bench/capture_instructions.py --variant bench/sql/variants/record_in_cte.sql
    .venv/bin/python bench/capture_instructions.py --scale 1 --transactions 100   # smoke run
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from capture_overhead import TRIGGER_REFERENCES, capture, install_reference, pgbench
from common import BENCH_SETTINGS, NO_TX_RECORD, finish

SIDES = ("untracked", "tracked", "norecord", "generic", "lean")
BASE_RUN = 200  # transactions of the run whose count is subtracted
# Instructions are counted, not time: durability settings change no instruction in the backend,
# and without autovacuum nothing else changes the data between sides.
SETTINGS = {**BENCH_SETTINGS, "fsync": "off", "autovacuum": "off"}


def total_instructions(path: Path) -> int | None:
    """The process's instruction count, from its callgrind file; None while the file is being written."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def counted_run(cluster: Cluster, dbname: str, transactions: int, out_dir: Path) -> int:
    """One pgbench client running `transactions` transactions; the instructions of its backend.
    pgbench opens a second, short connection of its own; the client's backend is the busier one."""
    before = set(out_dir.iterdir())
    pgbench(cluster, dbname, ["-n", "-c", "1", "-t", str(transactions)])
    deadline, seen, stable = time.monotonic() + 120, None, 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        new = set(out_dir.iterdir()) - before
        counts = {p: total_instructions(p) for p in new}
        done = {p: c for p, c in counts.items() if c is not None}
        if done and len(done) == len(counts):
            stable = stable + 1 if seen == set(done) else 0
            seen = set(done)
            if stable >= 2:  # nothing more arrived for a second
                return max(done.values())
    raise RuntimeError(f"no callgrind output for the pgbench run on {dbname}")


def prepare(cluster: Cluster, side: str, dbname: str, scale: int, warmup: int, variant: Path | None = None) -> None:
    cluster.create_database(dbname)
    pgbench(cluster, dbname, ["-i", "-q", "-s", str(scale)])
    if side in TRIGGER_REFERENCES:
        install_reference(cluster, dbname, side)
    elif side != "untracked":
        capture(cluster, dbname,
                statements=(variant.read_text(),) if variant else NO_TX_RECORD if side == "norecord" else ())
    pgbench(cluster, dbname, ["-n", "-c", "2", "-j", "2", "-t", str(warmup // 2)])
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute("VACUUM")
        conn.execute("CHECKPOINT")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument("--warmup", type=int, default=6000, help="transactions before counting (default 6000)")
    p.add_argument("--transactions", type=int, default=500, help="transactions counted per side (default 500)")
    p.add_argument("--variant", type=Path, action="append", default=[], metavar="FILE",
                   help="also count a capture design: a SQL file run on a tracked database after `rewind track` "
                        "(e.g. bench/sql/variants/*.sql); repeatable")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        p.error("valgrind is not installed (Debian: apt-get install valgrind)")
    print("capture_instructions: instructions per pgbench TPC-B transaction in the backend, under callgrind")
    print(f"  scale {args.scale}, {args.warmup} warm-up transactions, {args.transactions} counted, one client")
    sys.stdout.flush()
    per_tx: dict[str, float] = {}
    with Cluster(settings=SETTINGS) as cluster, tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        out_dir.chmod(0o777)  # the backends write here as the server's OS user
        dbs = {side: f"bench_{side}" for side in SIDES}
        variants = {f"v{i}": path for i, path in enumerate(args.variant, 1)}
        dbs.update({side: f"bench_{side}" for side in variants})
        for side, path in variants.items():
            print(f"  variant {side}: {path}")
        for side, dbname in dbs.items():
            prepare(cluster, side, dbname, args.scale, args.warmup, variants.get(side))
        data = str(cluster.data_dir)
        server = shlex.split(Path(data, "postmaster.opts").read_text())
        subprocess.run(cluster.server_command([cluster.bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
                       check=True, capture_output=True)
        valgrind = subprocess.Popen(
            cluster.server_command(["valgrind", "--tool=callgrind", "--trace-children=yes",
                            f"--callgrind-out-file={out_dir}/callgrind.%p", *server]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    psycopg.connect(cluster.dsn(), connect_timeout=5).close()
                    break
                except psycopg.OperationalError:
                    if valgrind.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("PostgreSQL did not start under valgrind") from None
                    time.sleep(1)
            print()
            print(f"{'side':<10}  {'instructions/tx':>15}  {'over untracked':>14}")
            for side, dbname in dbs.items():
                counted_run(cluster, dbname, 10, out_dir)
                base = counted_run(cluster, dbname, BASE_RUN, out_dir)
                full = counted_run(cluster, dbname, BASE_RUN + args.transactions, out_dir)
                per_tx[side] = (full - base) / args.transactions
                over = per_tx[side] - per_tx["untracked"]
                print(f"{side:<10}  {per_tx[side]:>15,.0f}  {over:>14,.0f}", flush=True)
        finally:
            subprocess.run(cluster.server_command([cluster.bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
                           capture_output=True)
            valgrind.wait(120)
    capture = {side: per_tx[side] - per_tx["untracked"] for side in SIDES}
    finish("none (instructions, for comparing capture designs; the target is capture_overhead.py's TPS ratio)", {
        "tracked/untracked instructions per transaction": per_tx["tracked"] / per_tx["untracked"],
        "Rewind's capture / generic trigger's (instructions over untracked)": capture["tracked"] / capture["generic"],
        "Rewind's capture / lean trigger's (instructions over untracked)": capture["tracked"] / capture["lean"],
        "Rewind's capture without its transaction record / with it": capture["norecord"] / capture["tracked"],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
