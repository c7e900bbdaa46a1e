"""Ingest: decoded journal changes into the mirror (SQLite and PostgreSQL) vs a bare decode loop.

One throwaway cluster with durable settings. Per repeat, a fresh database with rewind installed
and one tracked table (id int primary key, v text, n int); three pgoutput slots are created
BEFORE the workload (each Streamer's by a first start against its empty mirror), so that each
consumer reads exactly the same WAL:

    half the changes: INSERT INTO t SELECT ... FROM generate_series(...)   -- --rows-per-tx rows each
    other half:       UPDATE t SET n = n + 1, v = v || '!' WHERE id BETWEEN ...  (before + after images)

then, one after the other:

    bare     a psycopg2 replication stream of the journal publications, every payload decoded by
             journal.pgoutput.Decoder, nothing else: the ceiling for any consumer in Python
    sqlite   journal.Streamer into an SQLite mirror file (WAL mode, synchronous=FULL)
    postgres journal.Streamer into a mirror database of the same cluster (COPY)

Each is timed from its stream starting to the last change arriving (the Streamer: to the last
change committed in the mirror, stamps in the database included). changes/s = changes / time.
The ratios are each Streamer's throughput over the bare loop's in the same repeat (medians).

    .venv/bin/python bench/ingest.py                       # 200,000 changes, 3 repeats
    .venv/bin/python bench/ingest.py --changes 20000 --repeat 1   # smoke run
    .venv/bin/python bench/ingest.py --profile             # cProfile of the SQLite run
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import select
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import psycopg

import journal
from journal.pgoutput import Commit, Decoder, Insert
from journal.replication import open_stream
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, finish

SLOTS = ("bench_bare", "bench_sqlite", "bench_postgres")


def workload(dsn: str, changes: int, rows_per_tx: int) -> None:
    half = changes // 2
    with psycopg.connect(dsn, autocommit=True, options="-c rewind.actor=bench-agent") as conn:
        for start in range(0, half, rows_per_tx):
            conn.execute("INSERT INTO t SELECT g, 'value ' || g, 0 FROM generate_series(%s::int, %s::int) g",
                         (start + 1, min(start + rows_per_tx, half)))
        for start in range(0, changes - half, rows_per_tx):
            conn.execute("UPDATE t SET n = n + 1, v = v || '!' WHERE id BETWEEN %s AND %s",
                         (start + 1, min(start + rows_per_tx, changes - half)))


def bare(dsn: str, changes: int) -> float:
    """Decode every payload of the journal publications until `changes` rows of rewind.change."""
    decoder = Decoder()
    stream = open_stream(dsn, SLOTS[0], start_lsn=0)
    seen = 0
    read = stream.cursor.read_message
    t0 = time.perf_counter()
    try:
        while seen < changes:
            msg = read()
            if msg is None:
                select.select([stream], [], [], 0.05)
                continue
            m = decoder.decode(msg.payload)
            if isinstance(m, Insert) and m.relation.name == "change":
                seen += 1
            elif isinstance(m, Commit) and seen >= changes:
                break
        return time.perf_counter() - t0
    finally:
        stream.close()


def streamer(dsn: str, url: str, slot: str, changes: int, profile: cProfile.Profile | None = None) -> float:
    s = journal.Streamer(dsn, url, slot=slot, heartbeat_seconds=1.0)
    s.prepare()
    stop = threading.Event()
    target: Callable[[threading.Event], None] = s.run
    if profile is not None:
        def target(ev: threading.Event) -> None:
            profile.runcall(s.run, ev)
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    try:
        while not s.stats.ready:
            time.sleep(0.002)
        t0 = time.perf_counter()
        deadline = t0 + 600
        while s.stats.changes_total < changes:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"stalled at {s.stats.changes_total} changes")
            time.sleep(0.002)
        return time.perf_counter() - t0
    finally:
        stop.set()
        thread.join(60)


def first_start(dsn: str, url: str, slot: str) -> None:
    """A Streamer's first start (its slot, an empty mirror with a checkpoint) before the workload,
    so that the workload reaches it through the stream rather than the first start's copy."""
    s = journal.Streamer(dsn, url, slot=slot)
    stop = threading.Event()
    thread = threading.Thread(target=s.run, args=(stop,), daemon=True)
    thread.start()
    while not s.stats.ready:
        time.sleep(0.01)
    stop.set()
    thread.join(60)


def one_round(cluster: Cluster, n: int, args: argparse.Namespace, workdir: str) -> dict[str, float]:
    db = f"ingest_{n}"
    dsn = cluster.create_database(db)
    mirror_db = f"mirror_{n}"
    mirror_url = cluster.create_database(mirror_db)
    sqlite_url = f"sqlite:///{workdir}/mirror_{n}.sqlite"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n int)")
            journal.init(dsn)
            journal.track(dsn, ["public.t"])
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOTS[0],))
            for url, slot in ((sqlite_url, SLOTS[1]), (mirror_url, SLOTS[2])):
                first_start(dsn, url, slot)
            t0 = time.perf_counter()
            workload(dsn, args.changes, args.rows_per_tx)
            gen = time.perf_counter() - t0
            got = conn.execute("SELECT count(*), count(DISTINCT tx) FROM rewind.change").fetchone()
            assert got is not None and got[0] == args.changes, got
            print(f"  round {n}: workload {args.changes:,} changes in {got[1]:,} transactions, {gen:.2f} s")
            conn.execute("CHECKPOINT")
        times = {"bare": bare(dsn, args.changes)}
        profile = cProfile.Profile() if args.profile else None
        times["sqlite"] = streamer(dsn, sqlite_url, SLOTS[1], args.changes, profile)
        times["postgres"] = streamer(dsn, mirror_url, SLOTS[2], args.changes)
        for name, seconds in times.items():
            print(f"    {name:9} {seconds:6.2f} s  {args.changes / seconds:10,.0f} changes/s")
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return times
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                          "WHERE database = %s AND NOT active", (db,))
        cluster.drop_database(db)
        cluster.drop_database(mirror_db)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=200_000, help="journaled changes per round (default 200,000)")
    p.add_argument("--rows-per-tx", type=int, default=100, help="rows per transaction (default 100)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    p.add_argument("--profile", action="store_true", help="cProfile the SQLite Streamer, top 25 by own time")
    args = p.parse_args(argv)

    print("ingest: decoded journal changes into the mirror, vs a bare pgoutput decode loop")
    print(f"  {args.changes:,} changes per round ({args.rows_per_tx} rows per transaction), {args.repeat} round(s)")
    print(f"  load average at start: {os.getloadavg()[0]:.2f}")
    rounds: list[dict[str, float]] = []
    with Cluster(settings=dict(BENCH_SETTINGS)) as cluster, tempfile.TemporaryDirectory() as workdir:
        for n in range(args.repeat):
            rounds.append(one_round(cluster, n, args, workdir))
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    rate = {k: args.changes / v for k, v in med.items()}
    print(f"median changes/s: bare {rate['bare']:,.0f}, sqlite {rate['sqlite']:,.0f}, "
          f"postgres {rate['postgres']:,.0f}")
    for k in ("sqlite", "postgres"):
        spread = [args.changes / r[k] for r in rounds]
        print(f"  {k} rounds: " + ", ".join(f"{x:,.0f}" for x in spread))
    finish(">= 50,000 changes/s into SQLite and into PostgreSQL",
           {"sqlite/bare throughput": rate["sqlite"] / rate["bare"],
            "postgres/bare throughput": rate["postgres"] / rate["bare"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
