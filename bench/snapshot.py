"""Snapshot benchmark: `rewind backup create` vs plain `pg_dump -Fc`, and `rewind backup verify`
vs plain `pg_restore` into a new database, on the same pgbench scale-20 database in one run.

One throwaway cluster (durable settings, bench/common.py). Both sides use the same
pg_dump/pg_restore binaries (REWIND_PG_BINDIR is set to the cluster's). Each timed step starts
after a CHECKPOINT. Timed per repeat, order alternating:
- create:   `python -m rewind backup create --dsn ... --store file:///...` (a whole CLI process:
            Python start-up, exported snapshot, pg_dump with its default compression, per-table
            counts and content hashes computed at the same time by the exporting transaction
            (one backend, no parallel workers), SHA-256, the dump linked into the store,
            manifest) vs `pg_dump -Fc -f file`;
- verify:   `python -m rewind backup verify --store ... ID --scratch-dsn ...` (SHA-256 of the
            stored dump, create scratch database, single-job pg_restore, recompute counts and
            hashes on two connections with PostgreSQL's parallel workers, compare, drop) vs
            `CREATE DATABASE` + `pg_restore -d` of the plain dump (its DROP not timed).
Medians, with the range over repeats, and the ratio of each back-to-back pair; ratios of the
medians printed last. Targets: create <= 1.3x, verify <= 1.6x.

    .venv/bin/python bench/snapshot.py                 # scale 20, 3 repeats
    .venv/bin/python bench/snapshot.py --scale 2 --repeat 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rewind.devdb import Cluster

sys.path.insert(0, os.path.dirname(__file__))
from common import BENCH_SETTINGS, finish


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rewind_cmd = [sys.executable, "-m", "rewind"]
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with Cluster(settings=BENCH_SETTINGS) as cluster, tempfile.TemporaryDirectory(prefix="rewind-bench-") as tmp:
        env = {**os.environ, "PGPASSWORD": cluster.password, "REWIND_PG_BINDIR": str(cluster.bindir)}
        src = cluster.create_database("bench")
        t = time.perf_counter()
        subprocess.run([cluster.bin("pgbench"), "-i", "-q", "-s", str(args.scale), "-d", src], env=env, check=True,
                       capture_output=True)
        with psycopg.connect(src, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
            size = c.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        print(f"pgbench scale {args.scale}: {size[0] if size else '?'} loaded in {time.perf_counter() - t:.1f}s",
              flush=True)

        def checkpoint() -> None:
            with psycopg.connect(cluster.dsn(), autocommit=True) as c:
                c.execute("CHECKPOINT")

        store = Path(tmp) / "store"
        results: dict[str, list[float]] = {"pg_dump": [], "create": [], "pg_restore": [], "verify": []}
        sizes: dict[str, int] = {}
        for i in range(args.repeat):
            plain = Path(tmp) / f"plain{i}.pgc"

            def baseline_dump(plain: Path = plain) -> None:
                checkpoint()
                results["pg_dump"].append(timed([cluster.bin("pg_dump"), "-Fc", "-f", str(plain), "-d", src],
                                                env)[0])
                sizes["pg_dump"] = plain.stat().st_size

            snap: dict[str, Any] = {}

            def rewind_create(snap: dict[str, Any] = snap) -> None:
                checkpoint()
                elapsed, out = timed([*rewind_cmd, "backup", "create", "--dsn", src, "--store", store.as_uri(),
                                      "--json"], env)
                results["create"].append(elapsed)
                snap.update(json.loads(out))
                sizes["create"] = snap["bytes"]
                print(f"  create timings: {snap['timings']}", flush=True)

            for step in ((baseline_dump, rewind_create) if i % 2 == 0 else (rewind_create, baseline_dump)):
                step()
            name = f"restored_{i}"

            def baseline_restore(plain: Path = plain, name: str = name) -> None:
                checkpoint()
                t = time.perf_counter()
                with psycopg.connect(cluster.dsn(), autocommit=True) as c:
                    c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
                timed([cluster.bin("pg_restore"), "-d", cluster.dsn(name), str(plain)], env)
                results["pg_restore"].append(time.perf_counter() - t)
                cluster.drop_database(name)

            def rewind_verify(snap: dict[str, Any] = snap) -> None:
                checkpoint()
                elapsed, out = timed([*rewind_cmd, "backup", "verify", "--store", store.as_uri(), snap["id"],
                                      "--scratch-dsn", cluster.dsn(), "--json"], env)
                res = json.loads(out)
                assert res["ok"], res
                results["verify"].append(elapsed)
                print(f"  verify timings: {res['timings']}", flush=True)

            for step in ((baseline_restore, rewind_verify) if i % 2 == 0 else (rewind_verify, baseline_restore)):
                step()
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"dump size: pg_dump -Fc {sizes['pg_dump']} bytes, rewind {sizes['create']} bytes")
        for k, v in results.items():
            print(f"{k:10} median {med[k]:.2f}s  range {min(v):.2f}-{max(v):.2f}s  ({len(v)} runs)")
        # Each pair ran back to back, so its ratio is less exposed to load that comes and goes.
        for ours, base in (("create", "pg_dump"), ("verify", "pg_restore")):
            pairs = [a / b for a, b in zip(results[ours], results[base], strict=True)]
            print(f"{ours}/{base} per repeat: " + ", ".join(f"{r:.2f}" for r in pairs)
                  + f" (median {statistics.median(pairs):.2f})")
        finish("create <= 1.3x pg_dump -Fc; verify <= 1.6x pg_restore",
               {"create/pg_dump": med["create"] / med["pg_dump"],
                "verify/pg_restore": med["verify"] / med["pg_restore"]})


if __name__ == "__main__":
    main()
