"""Where journal-mode capture spends its time: one-statement transactions, part by part.

pgbench TPS moves by several points from run to run on a shared machine; this measures the parts
of the capture path where they can be told apart. Each side is a database with the same table
(id int primary key, v int, pad text; 10,000 rows) and a procedure that runs one-statement
transactions in a loop, committing each one, in the backend, with no client round trips:

    untracked      no trigger
    empty trigger  an AFTER ROW trigger whose PL/pgSQL function does nothing: the price of any
                   trigger-based capture before it writes anything
    no tx record   Rewind's capture with the transaction record left out (rewind.journal_tx()
                   replaced by a constant): the change row alone
    rewind         Rewind's capture as shipped: the change row, and the transaction record written
                   by the first captured change of each transaction

Bursts of --transactions transactions alternate between the sides, --bursts times; the minimum
of each side's bursts is its cost on an undisturbed core (the median is printed beside it). The
server runs with fsync off: the WAL flush of each commit, the same on every side, would otherwise
dominate. Workloads: a one-row UPDATE (pgbench's three statements are of this kind) and a one-row
INSERT (pgbench_history's). The ratios printed last are the transaction record's share of
Rewind's capture cost, per workload.

    .venv/bin/python bench/capture_parts.py                        # 25 bursts of 1,000 transactions
    .venv/bin/python bench/capture_parts.py --bursts 3 --transactions 200   # smoke run
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
from common import NO_TX_RECORD, finish

WORKLOADS = {
    "UPDATE": "UPDATE t SET v = v + 1 WHERE id = 1 + (i * 7919) % 10000",
    "INSERT": "INSERT INTO h (v) VALUES (i)",
}
SIDES = ("untracked", "empty trigger", "no tx record", "rewind")
_EMPTY_TRIGGER = ("CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
                  *(f"CREATE TRIGGER nothing AFTER INSERT OR UPDATE OR DELETE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION nothing()" for table in ("t", "h")))


def setup(cluster: Cluster, dbname: str, side: str) -> psycopg.Connection:
    cluster.create_database(dbname)
    conn = psycopg.connect(cluster.dsn(dbname), autocommit=True)
    conn.execute("CREATE TABLE t (id integer PRIMARY KEY, v integer, pad text)")
    conn.execute("CREATE TABLE h (id bigserial, v integer, at timestamptz DEFAULT now())")
    conn.execute("INSERT INTO t SELECT g, 0, repeat('x', 80) FROM generate_series(1, 10000) g")
    if side in ("no tx record", "rewind"):
        journal.init(cluster.dsn(dbname))
        journal.track(cluster.dsn(dbname), ["public.t", "public.h"])
    for statement in {"empty trigger": _EMPTY_TRIGGER, "no tx record": NO_TX_RECORD}.get(side, ()):
        conn.execute(statement)
    for name, statement in WORKLOADS.items():
        conn.execute(f"CREATE PROCEDURE run_{name.lower()}(n integer) LANGUAGE plpgsql AS "
                     f"$$ BEGIN FOR i IN 1..n LOOP {statement}; COMMIT; END LOOP; END $$")
        conn.execute(f"CALL run_{name.lower()}(200)")  # warm: plans cached, pages in memory
    return conn


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bursts", type=int, default=25, help="bursts per side and workload (default 25)")
    p.add_argument("--transactions", type=int, default=1000, help="transactions per burst (default 1000)")
    args = p.parse_args(argv)
    print("capture_parts: one-statement transactions in a procedure loop, microseconds per transaction")
    print(f"  {args.bursts} bursts of {args.transactions} transactions per side and workload, sides alternating; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    costs: dict[str, dict[str, list[float]]] = {w: {s: [] for s in SIDES} for w in WORKLOADS}
    with Cluster(settings={"fsync": "off", "synchronous_commit": "on"}) as cluster:
        conns = {side: setup(cluster, f"parts_{i}", side) for i, side in enumerate(SIDES)}
        try:
            for burst in range(args.bursts):
                order = SIDES[burst % len(SIDES):] + SIDES[:burst % len(SIDES)]
                for workload in WORKLOADS:
                    for side in order:
                        t0 = time.perf_counter()
                        conns[side].execute(f"CALL run_{workload.lower()}(%s)", (args.transactions,))
                        costs[workload][side].append((time.perf_counter() - t0) / args.transactions * 1e6)
        finally:
            for conn in conns.values():
                conn.close()
    ratios = {}
    for workload, by_side in costs.items():
        best = {side: min(values) for side, values in by_side.items()}
        print()
        print(f"{workload:<14}  {'min':>7}  {'median':>7}  {'over untracked':>14}")
        for side, values in by_side.items():
            print(f"{side:<14}  {best[side]:>7.1f}  {statistics.median(values):>7.1f}  "
                  f"{best[side] - best['untracked']:>14.1f}")
        capture = best["rewind"] - best["untracked"]
        ratios[f"{workload}: transaction record / Rewind's capture cost"] = \
            (best["rewind"] - best["no tx record"]) / capture if capture > 0 else float("nan")
    finish("none (a breakdown, for bench/capture_overhead.py's ratio)", ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
