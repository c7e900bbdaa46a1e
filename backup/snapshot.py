"""Taking a snapshot: pg_dump -Fc under a snapshot exported by rewind, table counts and hashes
computed in the same snapshot while pg_dump runs, every object's SHA-256, the manifest last."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.conninfo import make_conninfo

from backup import content_hash
from backup import manifest as mf
from backup.stats import compute_stats, list_tables, stats_in_transaction
from backup.stores import Progress, Store
from backup.tools import find_tool
from journal.connection import connect, mask_dsn, mask_text, parse_dsn
from journal.errors import Refused

REWIND_VERSION = "0.1.0"


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo for a client program without the password, which goes in PGPASSWORD instead of
    argv (where `ps` would show it)."""
    info = parse_dsn(dsn)
    env = dict(os.environ)
    password = info.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    env.setdefault("PGAPPNAME", "rewind backup")
    return make_conninfo("", **{k: str(v) for k, v in info.items()}), env


@dataclass
class Snapshot:
    id: str
    manifest: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": self.id, "database": m["database"], "created_at": m["created_at"],
                "finished_at": m["finished_at"], "bytes": sum(o["bytes"] for o in m["objects"].values()),
                "tables": len(m["tables"]), "rows": sum(t["rows"] for t in m["tables"].values()),
                "snapshot": m["snapshot"], "timings": m["timings"], "store": m.get("store")}


def create_snapshot(dsn: str, store: Store, *, progress: Progress | None = None, hash_workers: int = 1,
                    parallel_hash: bool = False, compress: str | None = None) -> Snapshot:
    """Take a snapshot of the database into the store. Nothing is listed until the manifest,
    written last, exists.

    pg_dump starts as soon as the snapshot is exported; the table list, the counts and the hashes
    are read beside it, in the exporting transaction. Its own process (compressing) is the
    critical path and needs a core to itself: one hashing backend, without parallel workers,
    scans about three times faster than pg_dump dumps and so finishes first without taking much
    CPU from it. hash_workers > 1 hashes on that many connections that import the snapshot."""
    started = time.monotonic()
    created_at = datetime.now(UTC)
    snap_id = mf.new_id(created_at)
    method = content_hash.DEFAULT
    with connect(dsn, autocommit=True, application_name="rewind backup") as holder:
        version_num = holder.info.server_version
        pg_dump = find_tool("pg_dump", version_num)
        store.preflight()
        conninfo, env = libpq_target(dsn)
        # The exporting transaction stays open until pg_dump finishes; pg_dump starts as soon as
        # it has the snapshot, and everything else is read in that transaction while it runs.
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = holder.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text").fetchone()
        assert row is not None
        exported, visibility = row
        with store.staging() as staging:
            dump_path = staging / mf.DUMP
            cmd = [pg_dump, "--format=custom", f"--snapshot={exported}", f"--file={dump_path}", "--no-sync"]
            if compress:
                cmd.append(f"--compress={compress}")
            cmd += ["--dbname", conninfo]
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            stderr: list[bytes] = []
            reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read() if proc.stderr else b""))
            reader.start()
            try:
                row = holder.execute(
                    "SELECT current_database(), current_setting('server_version'), pg_encoding_to_char(encoding), "
                    "datcollate, datctype FROM pg_database WHERE datname = current_database()").fetchone()
                assert row is not None
                database, server_version, encoding, collate, ctype = row
                # Counted and hashed while pg_dump runs, in the snapshot it dumps: by the exporting
                # transaction itself, unless more than one hashing connection is asked for.
                tables = list_tables(holder)
                t1 = time.monotonic()
                if hash_workers > 1:
                    stats = compute_stats(dsn, tables, method=method, snapshot=exported, workers=hash_workers,
                                          parallel=parallel_hash)
                else:
                    stats = stats_in_transaction(holder, tables, method=method, parallel=parallel_hash)
                hash_s = time.monotonic() - t1
                rc = proc.wait()
            except BaseException:
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
                raise
            finally:
                reader.join()
            dump_s = time.monotonic() - t0
            holder.execute("COMMIT")
            if rc != 0:
                text = mask_text(b"".join(stderr).decode(errors="replace").strip(), dsn)
                raise Refused(f"pg_dump of {mask_dsn(dsn)} failed (exit {rc}): {text}")
            t2 = time.monotonic()
            size = dump_path.stat().st_size
            # The SHA-256 takes the CPU, a local store's fsync the disk: one while the other.
            syncer = threading.Thread(target=store.sync_staged, args=(dump_path,))
            syncer.start()
            try:
                sha = mf.file_sha256(dump_path)
            finally:
                syncer.join()
            sha_s = time.monotonic() - t2
            t3 = time.monotonic()
            store.put_file(mf.key(snap_id, mf.DUMP), dump_path, sha256=sha, progress=progress)
            upload_s = time.monotonic() - t3
    finished_at = datetime.now(UTC)
    doc: dict[str, Any] = {
        "format": mf.FORMAT, "id": snap_id, "database": database, "server_version": server_version,
        "server_version_num": version_num, "rewind_version": REWIND_VERSION,
        "encoding": encoding, "collate": collate, "ctype": ctype,
        "created_at": created_at.isoformat(), "finished_at": finished_at.isoformat(),
        "host": socket.gethostname(), "source": mask_dsn(dsn), "store": store.url,
        "snapshot": {"exported": exported, "visibility": visibility},
        "content_hash": method, "tables": stats, "objects": {mf.DUMP: {"bytes": size, "sha256": sha}},
        "timings": {"dump_s": round(dump_s, 3), "hash_s": round(hash_s, 3), "sha256_s": round(sha_s, 3),
                    "upload_s": round(upload_s, 3), "total_s": round(time.monotonic() - started, 3)},
    }
    store.put_bytes(mf.key(snap_id, mf.MANIFEST), mf.seal(doc))
    return Snapshot(snap_id, doc)
