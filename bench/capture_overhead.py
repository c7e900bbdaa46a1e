"""Capture overhead on OLTP: pgbench TPC-B against an untracked and a tracked database.

Both databases live in one throwaway cluster with durable settings (fsync, synchronous_commit and
full_page_writes on). They are initialised identically with ``pgbench -i``; in the tracked one
``rewind init`` runs and all four pgbench tables are tracked. Rounds interleave the two databases
(the order alternates each round, so drift in the machine's speed falls on both sides), each run
preceded by a VACUUM of the pgbench tables and a CHECKPOINT. The result is the ratio of the
median TPS of each side.

--mode stream tracks the tables in stream mode (row images from WAL under REPLICA IDENTITY FULL, a
context message per transaction) and runs the real sidecar, `rewind serve` with its default
SQLite mirror and its default CPU priority (nice 10), as a separate process for the whole run, on
the same cores as PostgreSQL and pgbench: its decoding, journaling (the COPY into rewind.change
runs in a PostgreSQL backend, at normal priority) and mirroring are part of the cost measured. It
runs in a session of its own, as under a service manager, so its nice lowers its whole session's
scheduling group below PostgreSQL's backends (see rewind/priority.py). After each tracked round
the benchmark waits until the sidecar has journaled everything (and prints how long that took),
so no round leaves work for the next.

Stream mode also measures a third database, "decoding": the same stream-mode capture, its slot
consumed by pg_recvlogical (PostgreSQL's own C client, writing to /dev/null, at the same priority)
instead of the sidecar. It is the ceiling of any consumer of this stream: what the capture and
PostgreSQL's walsender cost with nothing journaled.

--reference adds sides that say what the target asks of this machine today, in the same rounds.
Journal mode: the two trigger designs the target was set against (sql/reference_triggers.sql),
"generic", a to_jsonb(OLD)/to_jsonb(NEW) audit row trigger, and "lean", the rows' text into an
unindexed table; and "norecord", Rewind's own capture with its transaction record left out
(common.NO_TX_RECORD): what the record the issue requires costs is the difference to "tracked".
Stream mode: "pydecode", the same stream-mode capture with its slot read by decode_only.py, which
reads and decodes the stream in Python as the sidecar does and then does nothing: the floor of any
Python consumer, between the ceiling ("decoding") and the sidecar, which also journals and mirrors.

    .venv/bin/python bench/capture_overhead.py                    # full: scale 10, 3 x 20 s each
    .venv/bin/python bench/capture_overhead.py --mode stream      # stream mode, with rewind serve
    .venv/bin/python bench/capture_overhead.py --reference        # + the reference triggers, no record
    .venv/bin/python bench/capture_overhead.py --mode stream --reference   # + a decode-only Python consumer
    .venv/bin/python bench/capture_overhead.py --seconds 3 --rounds 1 --scale 1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path

import psycopg
from psycopg import sql

import journal
from journal.replication import JOURNAL_PUBLICATIONS, TABLES_PUBLICATION
from rewind.config import DEFAULT_NICE
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, NO_TX_RECORD, finish
from process_cpu import ProcessCPU

# Durable, production-like settings instead of the dev defaults (fsync/full_page_writes off).

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  re.M)
REFERENCE_TRIGGERS = Path(__file__).with_name("sql") / "reference_triggers.sql"
REFERENCE_LABELS = {
    "generic": "generic reference trigger/untracked TPS",
    "lean": "lean reference trigger/untracked TPS",
    "norecord": "Rewind without its transaction record/untracked TPS",
    "pydecode": "decode-only Python consumer/untracked TPS (the floor of a Python consumer)",
}
TRIGGER_REFERENCES = ("generic", "lean")  # sql/reference_triggers.sql, on untracked pgbench tables
REFERENCES = {"journal": (*TRIGGER_REFERENCES, "norecord"), "stream": ("pydecode",)}
DECODE_ONLY = Path(__file__).with_name("decode_only.py")
_TRANSACTIONS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
CPU_GROUPS = ("backends", "walsenders", "rewind serve", "rewind's backend", "pg_recvlogical", "python decode",
              "server, other", "pgbench client")


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


def run_once(cluster: Cluster, dbname: str, args: argparse.Namespace, consumers: dict[str, int],
             then: Callable[[], object] | None = None) -> tuple[float, dict[str, float]]:
    """One pgbench run (and `then`, the sidecar's catch-up, inside the same CPU accounting): its
    TPS and, with --cpu, the CPU microseconds per transaction of each process group."""
    prepare(cluster, dbname)
    cpu = ProcessCPU(_classifier(cluster, dbname, consumers)) if args.cpu else None
    with cpu or nullcontext():  # without --cpu, no sampling beside the measured run
        out = pgbench(cluster, dbname, ["-n", "-c", str(args.clients), "-j", str(args.clients), "-T",
                                        str(args.seconds), "-M", args.protocol])
        if then is not None:
            then()
    m, n = _TPS.search(out), _TRANSACTIONS.search(out)
    if m is None or n is None:
        raise RuntimeError(f"no TPS in pgbench output:\n{out}")
    seconds = cpu.seconds if cpu else {}
    return float(m.group(1)), {group: used / int(n.group(1)) * 1e6 for group, used in seconds.items()}


def _classifier(cluster: Cluster, dbname: str, consumers: dict[str, int]) -> Callable[[int, str], str | None]:
    """Process groups for the CPU accounting of a run on dbname. The sidecar's own database
    connections (application_name rewind-*) are asked for now: a reconnect changes them."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        rewind_backends = {int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'rewind%' "
            "AND backend_type = 'client backend'")}
    by_pid = {pid: name for name, pid in consumers.items()}
    server, client = cluster.bin("postgres"), cluster.bin("pgbench")

    def classify(pid: int, cmdline: str) -> str | None:
        if pid in by_pid:
            return by_pid[pid]
        if pid in rewind_backends:
            return "rewind's backend"
        if cmdline.startswith(client):
            return "pgbench client"
        if cmdline.startswith("postgres: walsender"):
            return "walsenders"
        if cmdline.startswith("postgres: ") and f" {dbname} " in cmdline:
            return "backends"
        if cmdline.startswith(("postgres: ", server)):
            return "server, other"
        return None
    return classify


def install_reference(cluster: Cluster, dbname: str, kind: str) -> None:
    """One of the reference audit triggers on every pgbench table of dbname."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(REFERENCE_TRIGGERS.read_text())
        for table in PGBENCH_TABLES:
            conn.execute(sql.SQL("CREATE TRIGGER bench_audit AFTER INSERT OR UPDATE OR DELETE ON {} "
                                 "FOR EACH ROW EXECUTE FUNCTION {}()").format(
                sql.Identifier(table), sql.Identifier(f"bench_audit_{kind}")))


def capture(cluster: Cluster, dbname: str, *, mode: str | None = None, statements: Sequence[str] = ()
            ) -> list[journal.TrackedTable]:
    """rewind init and track of every pgbench table of dbname, then statements: a variant of the
    capture (common.NO_TX_RECORD, a bench/sql/variants file)."""
    journal.init(cluster.dsn(dbname))
    tracked = journal.track(cluster.dsn(dbname), [f"public.{t}" for t in PGBENCH_TABLES], mode=mode)
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    return tracked


def journal_size(cluster: Cluster, dbname: str) -> tuple[int, str]:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        row = conn.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('rewind.change')) "
                           "FROM rewind.change").fetchone()
        assert row is not None
        return int(row[0]), str(row[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sidecar(dsn: str) -> Iterator[int]:
    """`rewind serve` as its own process in a session of its own (as a service manager starts
    it), until it answers /readyz; stopped with SIGTERM."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "serve.log")
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "rewind", "serve", "--dsn", dsn, "--journal",
                                     f"sqlite:///{tmp}/journal.sqlite", "--http", f"127.0.0.1:{port}",
                                     "--heartbeat-seconds", "1"], stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rewind serve did not become ready:\n" + log.read_text())
                time.sleep(0.2)
            yield proc.pid
        finally:
            proc.terminate()
            proc.wait(60)


def stream_slot(cluster: Cluster, dbname: str) -> str:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        row = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()").fetchone()
    assert row is not None, f"no slot on {dbname}"
    return str(row[0])


@contextmanager
def consumer(argv: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    """A stream consumer as its own process, in a session of its own at the sidecar's default
    priority (its session's group at rewind's default nice), for the whole run."""
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    with suppress(OSError):  # no autogroup: then the priority is the same as the sidecar's anyway
        Path(f"/proc/{proc.pid}/autogroup").write_text(str(DEFAULT_NICE))
    try:
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def bare_consumer(cluster: Cluster, dbname: str) -> ContextManager[int]:
    """pg_recvlogical on the database's slot, with the sidecar's options, discarding what it receives."""
    publications = ",".join((*JOURNAL_PUBLICATIONS, TABLES_PUBLICATION))  # the sidecar's, in stream mode
    return consumer([cluster.bin("pg_recvlogical"), "-d", dbname, "-S", stream_slot(cluster, dbname), "--start",
                     "-f", "/dev/null", "-o", "proto_version=1", "-o", f"publication_names={publications}",
                     "-o", "messages=true", "-s", "1", "-F", "1"], env=pg_env(cluster, dbname))


def decode_only_consumer(cluster: Cluster, dbname: str) -> ContextManager[int]:
    """decode_only.py on the database's slot: the stream read and decoded in Python, nothing more."""
    return consumer([sys.executable, str(DECODE_ONLY), cluster.dsn(dbname), stream_slot(cluster, dbname)])


def caught_up(dsn: str, timeout: float = 120) -> float:
    """Seconds until the sidecar has journaled every transaction committed so far."""
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        while True:
            row = conn.execute("SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots "
                               "WHERE database = current_database()", (lsn,)).fetchone()
            if row and row[0]:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("the sidecar did not catch up")
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument("--clients", type=int, default=2, help="pgbench clients, one thread each (default 2)")
    p.add_argument("--seconds", type=int, default=20, help="duration of each pgbench run (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--protocol", choices=["simple", "extended", "prepared"], default="simple",
                   help="pgbench -M query mode (default simple, pgbench's default)")
    p.add_argument("--mode", choices=["journal", "stream"], default="journal",
                   help="capture mode of the tracked side (stream: with `rewind serve` running)")
    p.add_argument("--cpu", action="store_true",
                   help="also account CPU time per transaction by process group (backends, walsenders, the "
                        "sidecar, ...), sampled from /proc: steadier than TPS on a shared machine")
    p.add_argument("--reference", action="store_true",
                   help="also measure reference sides: journal mode the reference audit triggers (generic to_jsonb, "
                        "lean row text) and Rewind without its transaction record; stream mode a decode-only "
                        "Python consumer")
    args = p.parse_args(argv)
    references = REFERENCES[args.mode] if args.reference else ()
    target = 0.85 if args.mode == "stream" else 0.80

    settings = dict(BENCH_SETTINGS)
    print("capture_overhead: pgbench TPC-B, untracked vs tracked database, interleaved rounds")
    print(f"  scale {args.scale}, {args.clients} clients, {args.seconds} s per run, {args.rounds} round(s), "
          f"-M {args.protocol}, {args.mode} mode")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + " (durable settings)")
    sys.stdout.flush()

    with Cluster(settings=settings) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        print(f"  PostgreSQL {row[0] if row else '?'}, {os.cpu_count()} CPUs, load average at start "
              f"{os.getloadavg()[0]:.2f}")
        sides = {"untracked": "bench_untracked", "tracked": "bench_tracked"}
        if args.mode == "stream":
            sides["decoding"] = "bench_decoding"
        for kind in references:
            sides[kind] = f"bench_{kind}"
        for dbname in sides.values():
            cluster.create_database(dbname)
            t0 = time.perf_counter()
            pgbench(cluster, dbname, ["-i", "-q", "-s", str(args.scale)])
            print(f"  pgbench -i -s {args.scale} on {dbname}: {time.perf_counter() - t0:.1f} s")
        tracked_dsn = cluster.dsn(sides["tracked"])
        for side, dbname in sides.items():
            if side in TRIGGER_REFERENCES:
                install_reference(cluster, dbname, side)
            elif side != "untracked":  # tracked, and the sides that run the same capture
                tracked = capture(cluster, dbname, mode=args.mode,
                                  statements=NO_TX_RECORD if side == "norecord" else ())
        print("  tracked: " + ", ".join(f"{t.table} (key {','.join(t.key_columns) or 'none'}, {t.mode})"
                                        for t in tracked))
        sys.stdout.flush()
        consumers: dict[str, int] = {}
        with ExitStack() as stack:
            if args.mode == "stream":
                consumers["rewind serve"] = stack.enter_context(sidecar(tracked_dsn))
                consumers["pg_recvlogical"] = stack.enter_context(bare_consumer(cluster, sides["decoding"]))
            if "pydecode" in sides:
                consumers["python decode"] = stack.enter_context(decode_only_consumer(cluster, sides["pydecode"]))
            tps, cpu = rounds(cluster, sides, args, tracked_dsn, consumers)
        if args.cpu:
            report_cpu(cpu)
        report(cluster, sides, tps, target)
    return 0


def rounds(cluster: Cluster, sides: dict[str, str], args: argparse.Namespace, tracked_dsn: str,
           consumers: dict[str, int]) -> tuple[dict[str, list[float]], dict[str, list[dict[str, float]]]]:
    tps: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    lags: list[float] = []
    print()
    print(f"{'round':>5}  {'side':<9}  {'TPS':>10}")
    names = list(sides)
    for rnd in range(1, args.rounds + 1):
        shift = (rnd - 1) % len(names)  # each side takes each place in the order in turn
        order = names[shift:] + names[:shift]
        for side in order:
            then = (lambda: lags.append(caught_up(tracked_dsn))) \
                if side == "tracked" and args.mode == "stream" else None
            value, used = run_once(cluster, sides[side], args, consumers, then)
            tps[side].append(value)
            cpu[side].append(used)
            lag = f"  (sidecar caught up {lags[-1]:.2f} s after the run)" if then is not None else ""
            print(f"{rnd:>5}  {side:<9}  {value:>10.1f}{lag}", flush=True)
    return tps, cpu


def report_cpu(cpu: dict[str, list[dict[str, float]]]) -> None:
    """Median CPU microseconds per transaction by process group and side (/proc user + system)."""
    groups = [g for g in CPU_GROUPS if any(g in run for runs in cpu.values() for run in runs)]
    print()
    print("CPU per transaction, microseconds (median of the rounds; /proc user + system time of each group):")
    print(f"{'side':<9}  " + "  ".join(f"{g:>{max(len(g), 6)}}" for g in groups) + f"  {'total':>6}")
    for side, runs in cpu.items():
        med = {g: statistics.median(run.get(g, 0.0) for run in runs) for g in groups}
        print(f"{side:<9}  " + "  ".join(f"{med[g]:>{max(len(g), 6)}.0f}" for g in groups)
              + f"  {statistics.median(sum(run.values()) for run in runs):>6.0f}")


def report(cluster: Cluster, sides: dict[str, str], tps: dict[str, list[float]], target: float) -> None:
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
    ratios = {}
    if "decoding" in tps:
        ratios["decoding/untracked TPS (capture + walsender + pg_recvlogical: any consumer's ceiling)"] = \
            med["decoding"] / med["untracked"]
    for kind, label in REFERENCE_LABELS.items():
        if kind in tps:
            ratios[label] = med[kind] / med["untracked"]
    ratios["tracked/untracked TPS"] = med["tracked"] / med["untracked"]
    finish(f"tracked/untracked TPS >= {target:.2f}", ratios)


if __name__ == "__main__":
    sys.exit(main())
