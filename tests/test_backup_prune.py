"""Retention: the grandfather-father-son plan, real deletes on a local store, and Object Lock
refusing deletes on S3 (moto over HTTP), which prune reports as kept."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import s3_fixtures
from helpers import rewind, rewind_json
from s3_fixtures import S3

from backup.catalog import SnapshotInfo
from backup.retention import Retention, plan
from backup.stores import open_store

moto_endpoint = s3_fixtures.moto_endpoint
s3 = s3_fixtures.s3


def _snap(t: datetime, verified: bool | None = None) -> SnapshotInfo:
    return SnapshotInfo(t.strftime("%Y%m%dT%H%M%SZ") + "-000000", t, 1, 1, verified, [], [], None)


def test_gfs_plan() -> None:
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    # Every 6 hours for 70 days, newest first.
    snaps = [_snap(start + timedelta(hours=6 * i)) for i in range(4 * 70)][::-1]
    keep = plan(snaps, Retention(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=3))
    assert [s.id for s in snaps[:3]] == [k for k in keep if "last" in keep[k]]
    daily = [k for k, v in keep.items() if "daily" in v]
    assert len(daily) == 7 and len({k[:8] for k in daily}) == 7  # one per day, newest of each day
    assert all(k.endswith("T180000Z-000000") for k in daily[1:])  # 18:00 is the newest of a full day
    assert len([k for k, v in keep.items() if "weekly" in v]) == 4
    assert sorted(k[:6] for k, v in keep.items() if "monthly" in v) == ["202501", "202502", "202503"]
    assert len(keep) < len(snaps)


def test_newest_verified_is_always_kept() -> None:
    t = datetime(2025, 3, 1, tzinfo=UTC)
    snaps = [_snap(t + timedelta(hours=3)), _snap(t + timedelta(hours=2), verified=False),
             _snap(t + timedelta(hours=1), verified=True), _snap(t, verified=True)]
    keep = plan(snaps, Retention(keep_last=1))
    assert keep == {snaps[0].id: ["last"], snaps[2].id: ["newest verified"]}


@pytest.fixture
def db(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50)")
    return dsn


def test_prune_local_store(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "store").as_uri()
    ids = [rewind_json(capsys, "backup", "create", "--dsn", db, "--store", url)[1]["id"] for _ in range(3)]
    assert rewind(capsys, "backup", "verify", "--store", url, ids[0], "--scratch-dsn", db)[0] == 0
    code, out, err = rewind(capsys, "backup", "prune", "--store", url)
    assert code == 2 and "no retention rule" in err
    code, planned = rewind_json(capsys, "backup", "prune", "--store", url, "--keep-last", "1", "--dry-run")
    assert code == 0 and planned["delete"] == [ids[1]] and planned["deleted"] == []
    assert {k["id"]: k["reasons"] for k in planned["keep"]} == {ids[2]: ["last"], ids[0]: ["newest verified"]}
    assert len(rewind_json(capsys, "backup", "list", "--store", url)[1]) == 3  # dry run changed nothing
    code, done = rewind_json(capsys, "backup", "prune", "--store", url, "--keep-last", "1")
    assert code == 0 and done["deleted"] == [ids[1]]
    assert [s["id"] for s in rewind_json(capsys, "backup", "list", "--store", url)[1]] == [ids[2], ids[0]]
    assert not (tmp_path / "store" / ids[1]).exists()


def test_prune_reports_object_lock_refusals_as_kept(db: str, s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket(lock=True)
    url = f"s3://{bucket}/locked"
    lock = ["--lock-mode", "GOVERNANCE", "--lock-days", "1"]
    ids = [rewind_json(capsys, "backup", *lock, "create", "--dsn", db, "--store", url)[1]["id"] for _ in range(2)]
    code, result = rewind_json(capsys, "backup", "prune", "--store", url, "--keep-last", "1")
    assert code == 0, result
    assert result["deleted"] == [] and [x["id"] for x in result["locked"]] == [ids[0]]
    assert "Object Lock" in result["locked"][0]["reason"]
    assert [s["id"] for s in rewind_json(capsys, "backup", "list", "--store", url)[1]] == ids[::-1]


def test_prune_removes_what_killed_creates_left(db: str, tmp_path: Path, s3: S3,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A create killed half-way leaves objects without a manifest (never listed) and, in a local
    store, its staging directory. Prune removes them once they are a day old, and not before: a
    create may be running."""
    old = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y%m%dT%H%M%SZ") + "-aaaaaa"
    recent = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-bbbbbb"
    store_dir = tmp_path / "store"
    local = store_dir.as_uri()
    bucket = s3.bucket()
    for url in (local, f"s3://{bucket}/p"):
        kept = rewind_json(capsys, "backup", "create", "--dsn", db, "--store", url)[1]["id"]
        store = open_store(url)  # the S3 endpoint and credentials come from the AWS environment
        for snap_id in (old, recent):
            store.put_bytes(f"{snap_id}/dump.pgc", b"half a dump")
        if url == local:
            stale = store_dir / ".tmp-killed"
            stale.mkdir()
            (stale / "dump.pgc").write_bytes(b"x")
            os.utime(stale, (time.time() - 3 * 86400,) * 2)
        code, planned = rewind_json(capsys, "backup", "prune", "--store", url, "--keep-last", "5", "--dry-run")
        assert code == 0 and planned["interrupted"] == [old] and planned["staging"] == []
        assert store.list(old)  # a dry run removes nothing
        code, done = rewind_json(capsys, "backup", "prune", "--store", url, "--keep-last", "5")
        assert code == 0 and done["interrupted"] == [old] and done["deleted"] == []
        assert store.list(old) == [] and store.list(recent)  # the recent one may still be running
        assert [s["id"] for s in rewind_json(capsys, "backup", "list", "--store", url)[1]] == [kept]
        if url == local:
            assert done["staging"] == [".tmp-killed"] and not stale.exists()
        code, out, _ = rewind(capsys, "backup", "prune", "--store", url, "--keep-last", "5")
        assert code == 0 and "debris" not in out
