"""Verification is a restore: download, check every SHA-256, pg_restore into a scratch database,
recompute counts and hashes, compare with the manifest, run the operator's checks, drop the
scratch database, and record the outcome as a new object beside the snapshot."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backup import content_hash
from backup import manifest as mf
from backup.catalog import SnapshotInfo, resolve
from backup.snapshot import REWIND_VERSION, libpq_target
from backup.stats import compute_stats, list_tables
from backup.stores import Store
from backup.tools import find_tool
from journal.connection import connect, mask_dsn, mask_text
from journal.errors import BadInput


@dataclass
class VerifyResult:
    id: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    started_at: str = ""
    duration_s: float = 0.0
    tables: int = 0
    rows: int = 0
    checks: dict[str, bool | None] = field(default_factory=dict)
    record: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "problems": self.problems, "started_at": self.started_at,
                "duration_s": self.duration_s, "tables": self.tables, "rows": self.rows, "checks": self.checks,
                "record": self.record, "timings": self.timings}


def _compare(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    problems = []
    for name in sorted(set(expected) | set(actual)):
        e, a = expected.get(name), actual.get(name)
        if a is None:
            problems.append(f"table {name}: missing after restore")
        elif e is None:
            problems.append(f"table {name}: restored but not in the manifest")
        elif e["rows"] != a["rows"]:
            problems.append(f"table {name}: {a['rows']} rows restored, manifest says {e['rows']}")
        elif e["hash"] != a["hash"]:
            problems.append(f"table {name}: content hash differs from the manifest ({a['hash'][:16]}… vs "
                            f"{e['hash'][:16]}…)")
    return problems


def _load_checks(paths: list[Path]) -> list[tuple[str, str]]:
    checks = []
    for p in paths:
        try:
            checks.append((p.name, p.read_text()))
        except OSError as exc:
            raise BadInput(f"cannot read check file {p}: {exc.strerror}") from None
    return checks


def _run_check(conn: psycopg.Connection[Any], text: str) -> tuple[bool, str | None]:
    try:
        with conn.transaction():
            rows = conn.execute(text).fetchall()
    except psycopg.Error as exc:
        return False, f"failed: {' '.join(str(exc).split())}"
    if len(rows) != 1 or len(rows[0]) != 1 or rows[0][0] is not True:
        shown = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else f"{len(rows)} row(s)"
        return False, f"returned {shown!r}, expected a single true"
    return True, None


def verify_snapshot(store: Store, which: str, scratch_dsn: str, *, checks: list[Path] | None = None,
                    jobs: int = 1, hash_workers: int = 2, record: bool = True) -> VerifyResult:
    """Prove a snapshot restorable; the result is recorded beside it (unless record=False)."""
    check_sql = _load_checks(checks or [])
    # Everything that can be wrong with the request is found before any work starts.
    with connect(scratch_dsn, application_name="rewind verify") as admin:
        version_num = int(admin.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    pg_restore = find_tool("pg_restore", version_num)
    store.preflight()
    snap = resolve(store, which)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    result = VerifyResult(snap.id, False, started_at=started.isoformat())
    try:
        _verify(store, snap, scratch_dsn, pg_restore, check_sql, jobs, hash_workers, result)
    finally:
        result.ok = not result.problems
        result.duration_s = round(time.monotonic() - t0, 3)
        if record:
            rec_key = mf.verify_key(snap.id)
            doc = {**result.as_json(), "record": None, "finished_at": datetime.now(UTC).isoformat(),
                   "scratch": mask_dsn(scratch_dsn)}
            store.put_bytes(rec_key, mf.seal(doc))
            result.record = rec_key
    return result


def _verify(store: Store, snap: SnapshotInfo, scratch_dsn: str, pg_restore: str, checks: list[tuple[str, str]],
            jobs: int, hash_workers: int, result: VerifyResult) -> None:
    problems = result.problems
    if snap.manifest is None:
        problems.append(snap.problem or f"object {mf.key(snap.id, mf.MANIFEST)} is unreadable")
        return
    m = snap.manifest
    for rec in snap.verifications:
        try:
            mf.unseal(store.get_bytes(rec), rec)
        except mf.CorruptObject as exc:
            problems.append(str(exc))
    method = m.get("content_hash", content_hash.V1)
    if method not in content_hash.METHODS:
        problems.append(f"manifest uses content hash method {method!r}, unknown to rewind {REWIND_VERSION}")
        return
    with tempfile.TemporaryDirectory(prefix="rewind-verify-") as tmp:
        t = time.monotonic()
        listed = {o.key: o.size for o in snap.objects}
        files: dict[str, Path] = {}
        for name, meta in sorted(m["objects"].items()):
            k = mf.key(snap.id, name)
            if k not in listed:
                problems.append(f"object {k}: missing from the store")
                continue
            # A local store's file is checked and restored in place; anything else is downloaded
            # once, its SHA-256 computed on the way.
            path = store.local_path(k)
            if path is not None:
                sha = mf.file_sha256(path)
            else:
                path = Path(tmp) / name
                sha = store.get_file(k, path)
            files[name] = path
            size = path.stat().st_size
            if size != meta["bytes"]:
                problems.append(f"object {k}: {size} bytes, manifest says {meta['bytes']}")
            elif sha != meta["sha256"]:
                problems.append(f"object {k}: SHA-256 mismatch (stored object is corrupt)")
        result.timings["download_s"] = round(time.monotonic() - t, 3)
        if problems:
            return  # never restore bytes that are known to be wrong
        _restore_and_compare(files[mf.DUMP], m, method, scratch_dsn, pg_restore, checks, jobs, hash_workers,
                             result)


def _scratch_name(snap_id: str) -> str:
    return f"rewind_verify_{hashlib.sha256(snap_id.encode()).hexdigest()[:8]}_{secrets.token_hex(4)}"


def _restore_and_compare(dump: Path, m: dict[str, Any], method: str, scratch_dsn: str, pg_restore: str,
                         checks: list[tuple[str, str]], jobs: int, hash_workers: int, result: VerifyResult) -> None:
    problems = result.problems
    name = _scratch_name(m["id"])
    info = conninfo_to_dict(scratch_dsn)
    info["dbname"] = name
    target = make_conninfo("", **{k: str(v) for k, v in info.items()})
    with connect(scratch_dsn, application_name="rewind verify") as admin:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if m.get("encoding"):
            create = sql.SQL("{} ENCODING {}").format(create, sql.Literal(m["encoding"]))
        t = time.monotonic()
        admin.execute(create)
        result.timings["create_db_s"] = round(time.monotonic() - t, 3)
        try:
            t = time.monotonic()
            conninfo, env = libpq_target(target)
            cmd = [pg_restore, "--no-owner", "--no-acl", f"--jobs={max(1, jobs)}", "--dbname", conninfo, str(dump)]
            proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            result.timings["restore_s"] = round(time.monotonic() - t, 3)
            if proc.returncode != 0:
                lines = [ln for ln in mask_text(proc.stderr, target).splitlines() if ln.strip()]
                problems.append("pg_restore reported errors: " + " | ".join(lines[-5:]))
            t = time.monotonic()
            with connect(target, application_name="rewind verify") as c:
                tables = list_tables(c)
            actual = compute_stats(target, tables, method=method, workers=hash_workers)
            result.timings["hash_s"] = round(time.monotonic() - t, 3)
            result.tables = len(actual)
            result.rows = sum(v["rows"] for v in actual.values())
            problems.extend(_compare(m["tables"], actual))
            if checks:
                with connect(target, application_name="rewind verify") as c:
                    c.execute("SET search_path TO DEFAULT")  # the operator's own SQL, as in psql
                    for check_name, text in checks:
                        ok, why = _run_check(c, text)
                        result.checks[check_name] = ok
                        if not ok:
                            problems.append(f"check {check_name}: {why}")
        finally:
            t = time.monotonic()
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            result.timings["drop_s"] = round(time.monotonic() - t, 3)
