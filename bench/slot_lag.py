"""Slot lag after a burst: how soon `rewind stream` has mirrored and confirmed a burst of writes.

Issue #3's target: the slot's lag back under 1 s within 2 s after a burst ends. One throwaway
cluster with durable settings, one database with rewind installed and a tracked table, and a
journal.Streamer with its defaults (SQLite mirror, batches of 5,000 changes or 0.2 s, bypass
detection on) running in a thread, as `rewind stream` runs it. Per repeat, a burst of journaled
changes is written as fast as one connection can (the workload of bench/ingest.py on a fresh key
range: multi-row INSERTs, then UPDATEs of the same rows); then the script polls, every 10 ms:

    caught up   the Streamer has committed every change of the burst to the mirror, and so has
                confirmed it to the slot (it confirms right after each mirror commit): from then
                on the lag is zero until the next write
    slot        pg_replication_slots.confirmed_flush_lsn has reached the burst's last commit, as
                the server sees it (the feedback message has arrived)

Both are reported in seconds after the burst's last commit; medians of --repeat bursts. While the
stream is behind, its lag in seconds is the age of the oldest unconfirmed commit, which is at most
the time since the burst ended; so catching up within 1 s of the burst's end meets the target.

    .venv/bin/python bench/slot_lag.py                      # bursts of 100,000 changes, 3 repeats
    .venv/bin/python bench/slot_lag.py --changes 10000 --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

import psycopg

import journal
from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS

_SLOT_AT = "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s"


def write_burst(dsn: str, changes: int, rows_per_tx: int, offset: int) -> str:
    """The workload of bench/ingest.py on a fresh key range; returns a WAL position inside the
    last transaction: the slot has confirmed that transaction once its confirmed position is past."""
    half = changes // 2
    with psycopg.connect(dsn, autocommit=True, options="-c rewind.actor=bench-agent") as conn:
        for start in range(0, half, rows_per_tx):
            conn.execute("INSERT INTO t SELECT g, 'value ' || g, 0 FROM generate_series(%s::int, %s::int) g",
                         (offset + start + 1, offset + min(start + rows_per_tx, half)))
        batches = list(range(0, changes - half, rows_per_tx))
        for n, start in enumerate(batches, 1):
            with conn.transaction():
                conn.execute("UPDATE t SET n = n + 1, v = v || '!' WHERE id BETWEEN %s AND %s",
                             (offset + start + 1, offset + min(start + rows_per_tx, changes - half)))
                if n == len(batches):
                    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def burst(dsn: str, streamer: journal.Streamer, changes: int, rows_per_tx: int, offset: int) -> dict[str, float]:
    target = streamer.stats.changes_total + changes
    t0 = time.perf_counter()
    last_lsn = write_burst(dsn, changes, rows_per_tx, offset)
    t_end = time.perf_counter()
    caught_up = slot_seen = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = t_end + 120
        while caught_up is None or slot_seen is None:
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"no catch-up within 120 s: {streamer.stats}")
            if caught_up is None and streamer.stats.changes_total >= target:
                caught_up = now - t_end
            if slot_seen is None:
                seen = conn.execute(_SLOT_AT, (last_lsn, streamer.slot)).fetchone()
                if seen and seen[0]:
                    slot_seen = now - t_end
            time.sleep(0.01)
    return {"burst_s": t_end - t0, "caught_up_s": caught_up, "slot_s": slot_seen}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=100_000, help="changes per burst (default 100,000)")
    p.add_argument("--rows-per-tx", type=int, default=100, help="rows per transaction (default 100)")
    p.add_argument("--repeat", type=int, default=3, help="bursts; medians are reported (default 3)")
    args = p.parse_args(argv)

    print("slot_lag: seconds from the end of a burst until rewind stream has mirrored and confirmed it")
    print(f"  {args.changes:,} changes per burst ({args.rows_per_tx} rows per transaction), {args.repeat} burst(s)")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in BENCH_SETTINGS.items()) + " (durable settings)")
    print(f"  {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    results = []
    with Cluster(settings=dict(BENCH_SETTINGS)) as cluster, tempfile.TemporaryDirectory() as work:
        dsn = cluster.create_database("bench_lag")
        journal.init(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n int)")
        journal.track(dsn, ["public.t"])
        streamer = journal.Streamer(dsn, f"sqlite:///{work}/mirror.sqlite")
        streamer.prepare()
        stop = threading.Event()
        thread = threading.Thread(target=streamer.run, args=(stop,), daemon=True)
        thread.start()
        try:
            while not streamer.stats.ready:
                time.sleep(0.01)
            print()
            print(f"{'burst':>5}  {'write s':>8}  {'changes/s':>10}  {'caught up s':>11}  {'slot s':>7}")
            for i in range(1, args.repeat + 1):
                r = burst(dsn, streamer, args.changes, args.rows_per_tx, offset=i * args.changes)
                results.append(r)
                print(f"{i:>5}  {r['burst_s']:>8.2f}  {args.changes / r['burst_s']:>10,.0f}  "
                      f"{r['caught_up_s']:>11.2f}  {r['slot_s']:>7.2f}", flush=True)
        finally:
            stop.set()
            thread.join(60)
    caught = statistics.median(r["caught_up_s"] for r in results)
    slot = statistics.median(r["slot_s"] for r in results)
    print()
    print(f"load average at end: {os.getloadavg()[0]:.2f} (other work on the machine adds noise)")
    print("target: slot lag back under 1 s within 2 s after a burst ends (caught up within 1 s meets it)")
    print(f"median seconds after the burst until mirrored and confirmed: {caught:.2f}")
    print(f"median seconds after the burst until the slot shows it confirmed: {slot:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
