"""The S3 store against moto's server over real HTTP: create/list/verify, checksums, encryption,
Object Lock, multipart with progress, failures that must be clear and leave nothing listed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import s3_fixtures
from helpers import rewind, rewind_json
from interrupting_store import DiesBeforeManifest
from s3_fixtures import S3

import backup
from backup import manifest as mf
from backup.stores import ObjectExists, StoreOptions
from backup.stores.s3 import S3Store

moto_endpoint = s3_fixtures.moto_endpoint
s3 = s3_fixtures.s3

DATA = """
CREATE TABLE items (id int PRIMARY KEY, label text, price numeric(8,2));
INSERT INTO items SELECT g, 'item ' || g, g / 7.0 FROM generate_series(1, 300) g;
CREATE TABLE notes (body text);
INSERT INTO notes VALUES ('one'), ('two'), (NULL);
"""


@pytest.fixture
def db(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(DATA)
    return dsn


def test_create_list_verify_on_s3(db: str, s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/prod/rewind"
    code, created = rewind_json(capsys, "backup", "--path-style", "--sse", "AES256", "create", "--dsn", db,
                                "--store", url)
    assert code == 0, created
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"prod/rewind/{created['id']}/dump.pgc", f"prod/rewind/{created['id']}/manifest.json"]
    head = s3.client.head_object(Bucket=bucket, Key=keys[0], ChecksumMode="ENABLED")
    body = s3.client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert head["ServerSideEncryption"] == "AES256"

    code, listed = rewind_json(capsys, "backup", "list", "--store", url)
    assert code == 0 and [(s["id"], s["tables"], s["verified"]) for s in listed] == [(created["id"], 2, None)]
    code, result = rewind_json(capsys, "backup", "verify", "--store", url, "latest", "--scratch-dsn", db)
    assert code == 0 and result["ok"] and result["rows"] == 303
    code, listed = rewind_json(capsys, "backup", "list", "--store", url)
    assert listed[0]["verified"] is True


def test_corrupted_object_on_s3_fails_verify_naming_it(db: str, s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/x"
    snap_id = rewind_json(capsys, "backup", "create", "--dsn", db, "--store", url)[1]["id"]
    key = f"x/{snap_id}/dump.pgc"
    data = bytearray(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[100] ^= 0x10
    s3.client.put_object(Bucket=bucket, Key=key, Body=bytes(data))  # moto does not check checksums
    code, out, err = rewind(capsys, "backup", "verify", "--store", url, "--scratch-dsn", db, "--json")
    assert code == 1
    assert json.loads(out)["problems"] == [f"object {snap_id}/dump.pgc: SHA-256 mismatch (stored object is corrupt)"]


def test_interrupted_upload_leaves_nothing_listed(db: str, s3: S3, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket()
    store = backup.open_store(f"s3://{bucket}/p")
    with pytest.raises(ConnectionResetError):
        backup.create_snapshot(db, DiesBeforeManifest(store, ConnectionResetError("endpoint went away")))
    assert len(store.list()) == 1  # the dump is there...
    code, listed = rewind_json(capsys, "backup", "list", "--store", f"s3://{bucket}/p")
    assert code == 0 and listed == []  # ...but no snapshot exists without its manifest


def test_multipart_upload_with_progress_and_checked_download(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    store = S3Store(bucket, "big", StoreOptions(multipart_threshold=5 * 2**20, part_size=5 * 2**20,
                                                path_style=True))
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * 2**20 + 123))
    seen: list[int] = []
    store.put_file("a/dump.pgc", src, sha256=mf.file_sha256(src), progress=seen.append)
    assert sum(seen) == src.stat().st_size and len(seen) >= 2
    parts = s3.client.head_object(Bucket=bucket, Key="big/a/dump.pgc", PartNumber=1)
    assert parts.get("PartsCount") == 2
    back = tmp_path / "back.bin"
    store.get_file("a/dump.pgc", back)
    assert mf.file_sha256(back) == mf.file_sha256(src)
    with pytest.raises(ObjectExists):
        store.put_file("a/dump.pgc", src, sha256=mf.file_sha256(src))


def test_object_lock_refuses_deleting_a_locked_version(s3: S3) -> None:
    bucket = s3.bucket(lock=True)
    store = S3Store(bucket, "", StoreOptions(lock_mode="GOVERNANCE", lock_days=1))
    store.put_bytes("s/manifest.json", b"{}")
    head = s3.client.head_object(Bucket=bucket, Key="s/manifest.json")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(backup.DeleteRefused):
        store.delete("s/manifest.json")
    assert [o.key for o in store.list()] == ["s/manifest.json"]


def test_check_store(s3: S3, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    locked = s3.bucket(lock=True)
    code, report = rewind_json(capsys, "backup", "check-store", "--store", f"s3://{locked}/r")
    assert code == 0 and report["enforced"] is True and report["object_lock"] is True, report
    plain = s3.bucket()
    code, out, err = rewind(capsys, "backup", "check-store", "--store", f"s3://{plain}/r", "--json")
    assert code == 1 and json.loads(out)["enforced"] is False and "NOT enforced" in err
    code, out, err = rewind(capsys, "backup", "check-store", "--store", (tmp_path / "d").as_uri())
    assert code == 1 and "local directory" in err


def test_unreachable_endpoint_and_missing_credentials_are_clear(db: str, s3: S3, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bucket = s3.bucket()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    code, out, err = rewind(capsys, "backup", "create", "--dsn", db, "--store", f"s3://{bucket}/p")
    assert code == 2 and "cannot reach http://127.0.0.1:9" in err, err
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out, err = rewind(capsys, "backup", "list", "--store", f"s3://{bucket}/p")
    assert code == 2 and "no AWS credentials" in err, err
    code, out, err = rewind(capsys, "backup", "list", "--store", "s3://no-such-bucket-here/p")
    assert code == 2
    for endpoint in ("notaurl", "http://[bad"):  # botocore's own check of the URL: one line too
        code, out, err = rewind(capsys, "backup", "--endpoint-url", endpoint, "list", "--store", f"s3://{bucket}/p")
        assert code == 2 and "bad endpoint URL" in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    code, out, err = rewind(capsys, "backup", "--endpoint-url", "http://admin:key-secret@127.0.0.1:9", "list",
                            "--store", f"s3://{bucket}/p")
    assert code == 2 and "cannot reach http://admin:***@127.0.0.1:9" in err and "key-secret" not in err, err


def test_sse_kms_with_a_key_id(db: str, s3: S3, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SSE-KMS with a customer key: every object, single-part and multipart, is stored encrypted
    with that key, and the snapshot verifies. moto's server also speaks KMS, so the key is real
    there (moto does not refuse unknown key ids, so only the stored key id proves anything)."""
    kms = boto3.session.Session().client("kms", endpoint_url=s3.endpoint, region_name="us-east-1")
    key_id = kms.create_key(Description="rewind backups")["KeyMetadata"]["KeyId"]
    bucket = s3.bucket()
    url = f"s3://{bucket}/kms"
    code, created = rewind_json(capsys, "backup", "--sse", "aws:kms", "--kms-key-id", key_id, "create",
                                "--dsn", db, "--store", url)
    assert code == 0, created
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * 2**20))
    S3Store(bucket, "kms", StoreOptions(sse="aws:kms", kms_key_id=key_id, multipart_threshold=5 * 2**20,
                                        part_size=5 * 2**20)).put_file("multi/part.bin", big,
                                                                       sha256=mf.file_sha256(big))
    code, result = rewind_json(capsys, "backup", "--sse", "aws:kms", "--kms-key-id", key_id, "verify", "--store", url,
                               "latest", "--scratch-dsn", db)
    assert code == 0 and result["ok"], result
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys[:2] == [f"kms/{created['id']}/dump.pgc", f"kms/{created['id']}/manifest.json"]
    assert keys[2].startswith(f"kms/{created['id']}/verify-") and keys[3:] == ["kms/multi/part.bin"]
    for k in keys:
        head = s3.client.head_object(Bucket=bucket, Key=k)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id), k
