"""The S3 store against a real MinIO server started through testcontainers: create, list, verify
and prune through the CLI, and Object Lock that MinIO really enforces.

Runs whenever a Docker engine is reachable; skipped, saying why, only when none is. (moto's
server covers the same paths in test_backup_s3.py on machines without Docker.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from helpers import rewind_json
from s3_fixtures import aws_environment
from testcontainers.core.docker_client import DockerClient


def _docker_unreachable() -> str | None:
    """Why no Docker engine can be used, or None when one answers a ping."""
    try:
        DockerClient().client.ping()
    except Exception as exc:
        return f"no Docker engine reachable: {' '.join(str(exc).split())}"
    return None


@dataclass
class MinIO:
    endpoint: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="module")
def minio() -> Iterator[MinIO]:
    reason = _docker_unreachable()
    if reason:
        pytest.skip(reason)
    from testcontainers.community.minio import MinioContainer

    with MinioContainer() as container:
        cfg = container.get_config()
        yield MinIO(f"http://{cfg['endpoint']}", cfg["access_key"], cfg["secret_key"])


@pytest.fixture
def s3(minio: MinIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    aws_environment(monkeypatch, tmp_path, minio.endpoint, minio.access_key, minio.secret_key)
    return boto3.session.Session().client("s3", endpoint_url=minio.endpoint, region_name="us-east-1")


def _bucket(client: Any, *, lock: bool = False) -> str:
    name = f"rewind-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    return name


@pytest.fixture
def db(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text);"
                 "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g")
    return dsn


def test_create_list_verify_prune_on_minio(db: str, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"s3://{_bucket(s3)}/prod"
    ids = []
    for _ in range(3):
        code, created = rewind_json(capsys, "backup", "--path-style", "create", "--dsn", db, "--store", url)
        assert code == 0, created
        ids.append(created["id"])
    code, listed = rewind_json(capsys, "backup", "--path-style", "list", "--store", url)
    assert code == 0 and [s["id"] for s in listed] == ids[::-1]
    code, result = rewind_json(capsys, "backup", "--path-style", "verify", "--store", url, ids[1],
                               "--scratch-dsn", db)
    assert code == 0 and result["ok"] and result["rows"] == 500, result
    # The newest is kept by the rule, the newest verified whatever the rule says; the oldest goes.
    code, pruned = rewind_json(capsys, "backup", "--path-style", "prune", "--store", url, "--keep-last", "1")
    assert code == 0 and pruned["deleted"] == [ids[0]], pruned
    code, listed = rewind_json(capsys, "backup", "--path-style", "list", "--store", url)
    assert [(s["id"], s["verified"]) for s in listed] == [(ids[2], None), (ids[1], True)]
    assert not s3.list_objects_v2(Bucket=url.split("/")[2], Prefix=f"prod/{ids[0]}/").get("Contents")


def test_object_lock_is_enforced_and_prune_keeps_locked_snapshots(db: str, s3: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bucket = _bucket(s3, lock=True)
    url = f"s3://{bucket}/locked"
    code, report = rewind_json(capsys, "backup", "--path-style", "check-store", "--store", url)
    assert code == 0 and report["enforced"] is True, report
    lock = ["--lock-mode", "GOVERNANCE", "--lock-days", "1"]
    ids = [rewind_json(capsys, "backup", "--path-style", *lock, "create", "--dsn", db, "--store", url)[1]["id"]
           for _ in range(2)]
    head = s3.head_object(Bucket=bucket, Key=f"locked/{ids[0]}/dump.pgc")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    code, pruned = rewind_json(capsys, "backup", "--path-style", "prune", "--store", url, "--keep-last", "1")
    assert code == 0 and [k["id"] for k in pruned["locked"]] == [ids[0]], pruned
    code, listed = rewind_json(capsys, "backup", "--path-style", "list", "--store", url)
    assert ids[1] in [s["id"] for s in listed]
