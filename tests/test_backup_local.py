"""Snapshots into a local directory store, through the CLI, against the real cluster and real
pg_dump/pg_restore: create, list, verify (a real restore), and everything verify must catch."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import rewind, rewind_json
from interrupting_store import DiesBeforeManifest

import backup
from backup import content_hash
from backup import manifest as mf
from backup.stats import compute_stats, list_tables
from backup.stores import ObjectExists
from backup.stores.local import LocalStore
from journal.errors import BadInput
from rewind.devdb import Cluster

DATA = '''
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE "Odd ""Name""" (k text, v jsonb);
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2),
                           at timestamptz DEFAULT now());
INSERT INTO customers SELECT g, 'customer ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'c' || g || '@x' END
FROM generate_series(1, 200) g;
INSERT INTO "Odd ""Name""" VALUES ('a', '{"x": 1}'), ('a', '{"x": 1}'), (NULL, NULL);
INSERT INTO sales.orders (customer_id, total) SELECT 1 + g % 200, g * 1.25 FROM generate_series(1, 500) g;
'''


@pytest.fixture
def shop(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(DATA)
    return dsn


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def _scratch_dbs(pg_cluster: Cluster) -> list[str]:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'rewind_verify_%'")]


def test_create_list_verify_roundtrip(shop: str, store_url: str, pg_cluster: Cluster,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, created = rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)
    assert code == 0, created
    snap_id = created["id"]
    assert created["tables"] == 3 and created["rows"] == 200 + 3 + 500
    assert pg_cluster.password not in json.dumps(created)

    code, listed = rewind_json(capsys, "backup", "list", "--store", store_url)
    assert code == 0
    assert [s["id"] for s in listed] == [snap_id]
    assert listed[0]["verified"] is None and listed[0]["tables"] == 3 and listed[0]["bytes"] > 0

    root = Path(store_url.removeprefix("file://"))
    doc = mf.unseal((root / snap_id / "manifest.json").read_bytes(), "manifest")
    assert doc["tables"]["public.Odd \"Name\""]["rows"] == 3
    assert doc["snapshot"]["visibility"].count(":") == 2  # xmin:xmax:xip-list
    assert doc["objects"]["dump.pgc"]["sha256"] == mf.file_sha256(root / snap_id / "dump.pgc")
    assert doc["server_version"] and doc["rewind_version"] and doc["content_hash"] == "v2"
    assert sorted(p.name for p in root.iterdir()) == [snap_id]  # no staging area left behind

    code, result = rewind_json(capsys, "backup", "verify", "--store", store_url, "latest", "--scratch-dsn", shop)
    assert code == 0, result
    assert result == {**result, "id": snap_id, "ok": True, "problems": []}
    assert result["tables"] == 3 and result["rows"] == 703
    assert _scratch_dbs(pg_cluster) == []  # always dropped
    code, listed = rewind_json(capsys, "backup", "list", "--store", store_url)
    assert listed[0]["verified"] is True
    records = sorted((root / snap_id).glob("verify-*.json"))
    assert len(records) == 1 and mf.unseal(records[0].read_bytes(), "record")["ok"] is True


def test_newest_first_and_by_id(shop: str, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)[1]["id"] for _ in range(2)]
    code, listed = rewind_json(capsys, "backup", "list", "--store", store_url)
    assert [s["id"] for s in listed] == ids[::-1]
    code, result = rewind_json(capsys, "backup", "verify", "--store", store_url, ids[0], "--scratch-dsn", shop)
    assert code == 0 and result["id"] == ids[0]
    code, listed = rewind_json(capsys, "backup", "list", "--store", store_url)
    assert {s["id"]: s["verified"] for s in listed} == {ids[0]: True, ids[1]: None}


def test_counts_and_hashes_come_from_the_dumped_snapshot(shop: str, store_url: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Writers keep committing while the snapshot is taken; the manifest must still describe exactly
    what pg_dump saved, or the restore would not match it."""
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(shop, autocommit=True) as w:
            i = 0
            while not stop.is_set():
                i += 1
                w.execute("INSERT INTO sales.orders (customer_id, total) VALUES (1, %s)", (i,))
                w.execute("UPDATE customers SET name = name || '.' WHERE id = %s", (1 + i % 200,))

    t = threading.Thread(target=writer)
    t.start()
    try:
        code, created = rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)
    finally:
        stop.set()
        t.join()
    assert code == 0
    code, result = rewind_json(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", shop)
    assert code == 0 and result["ok"], result["problems"]


@pytest.mark.parametrize("target", ["dump.pgc", "manifest.json", "verify"])
def test_a_flipped_byte_in_any_object_fails_verify(shop: str, store_url: str, target: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    snap_id = rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)[1]["id"]
    assert rewind_json(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", shop)[0] == 0
    folder = Path(store_url.removeprefix("file://")) / snap_id
    path = next(folder.glob("verify-*.json")) if target == "verify" else folder / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    code, out, err = rewind(capsys, "backup", "verify", "--store", store_url, snap_id, "--scratch-dsn", shop,
                            "--json")
    assert code == 1
    result = json.loads(out)
    assert result["ok"] is False and result["id"] == snap_id
    assert any(path.name in p and "corrupt" in p for p in result["problems"]), result["problems"]
    assert path.name in err
    code, listed = rewind_json(capsys, "backup", "list", "--store", store_url)
    assert listed[0]["verified"] is False


def _forge(store: LocalStore, snap_id: str, doc: dict[str, Any], tmp_path: Path) -> str:
    """A new snapshot with the dump of snap_id and a properly sealed manifest saying what doc says."""
    forged = mf.new_id()
    dump = tmp_path / f"{forged}.pgc"
    store.put_file(mf.key(forged, mf.DUMP), dump, sha256=store.get_file(mf.key(snap_id, mf.DUMP), dump))
    store.put_bytes(mf.key(forged, mf.MANIFEST), mf.seal({**doc, "id": forged}))
    return forged


def test_content_mismatch_names_the_table(shop: str, tmp_path: Path, pg_cluster: Cluster) -> None:
    """A manifest (properly sealed) that disagrees with the dump: verify names the table."""
    store = LocalStore(tmp_path / "s")
    snap = backup.create_snapshot(shop, store)
    doc = dict(snap.manifest)
    doc["tables"] = {k: dict(v) for k, v in doc["tables"].items()}
    doc["tables"]["sales.orders"]["rows"] += 1
    doc["tables"]["public.customers"]["hash"] = "0" * 64
    result = backup.verify_snapshot(store, _forge(store, snap.id, doc, tmp_path), shop)
    assert not result.ok
    assert any(p.startswith("table sales.orders: 500 rows restored, manifest says 501") for p in result.problems)
    assert any(p.startswith("table public.customers: content hash differs") for p in result.problems)
    assert _scratch_dbs(pg_cluster) == []


def test_snapshots_hashed_by_an_older_rewind_still_verify(shop: str, tmp_path: Path) -> None:
    """A manifest without content_hash was hashed with v1: verify recomputes v1, and a method it
    does not know is a clear problem, not a crash."""
    store = LocalStore(tmp_path / "s")
    snap = backup.create_snapshot(shop, store)
    with psycopg.connect(shop) as c:
        v1 = compute_stats(shop, list_tables(c), method=content_hash.V1)
    assert v1 != snap.manifest["tables"]
    old = {k: v for k, v in snap.manifest.items() if k != "content_hash"} | {"tables": v1}
    result = backup.verify_snapshot(store, _forge(store, snap.id, old, tmp_path), shop)
    assert result.ok, result.problems
    result = backup.verify_snapshot(store, _forge(store, snap.id, {**old, "content_hash": "v9"}, tmp_path), shop)
    assert result.problems == ["manifest uses content hash method 'v9', unknown to rewind 0.1.0"]


def test_operator_checks_must_return_true(shop: str, store_url: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "orders_have_customers.sql"
    good.write_text("SELECT count(*) = 0 FROM sales.orders o LEFT JOIN customers c ON c.id = o.customer_id "
                    "WHERE c.id IS NULL")
    bad = tmp_path / "enough_customers.sql"
    bad.write_text("SELECT count(*) > 1000 FROM customers")
    assert rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)[0] == 0
    code, result = rewind_json(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", shop,
                               "--check", str(good))
    assert code == 0 and result["checks"] == {"orders_have_customers.sql": True}
    code, out, err = rewind(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", shop,
                            "--check", str(good), "--check", str(bad))
    assert code == 1 and "check enough_customers.sql: returned False" in err


def test_bad_scratch_dsn_and_missing_pg_restore_are_reported_before_work(
        shop: str, store_url: str, tmp_path: Path, pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    snap_id = rewind_json(capsys, "backup", "create", "--dsn", shop, "--store", store_url)[1]["id"]
    folder = Path(store_url.removeprefix("file://")) / snap_id
    wrong = pg_cluster.dsn(password="not-the-password")
    code, out, err = rewind(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", wrong)
    assert code == 2 and "cannot connect" in err and "not-the-password" not in err
    monkeypatch.setenv("REWIND_PG_BINDIR", str(tmp_path))
    code, out, err = rewind(capsys, "backup", "verify", "--store", store_url, "--scratch-dsn", shop)
    assert code == 2 and "pg_restore not found" in err
    assert not list(folder.glob("verify-*"))  # nothing was done, nothing recorded
    code, out, err = rewind(capsys, "backup", "create", "--store", store_url, "--dsn", shop)
    assert code == 2 and "pg_dump not found" in err


def test_bad_store_urls(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("ftp://host/x", "file://relative/path", "s3:///nobucket"):
        code, out, err = rewind(capsys, "backup", "list", "--store", url)
        assert code == 2 and "store URL" in err, err


def test_interrupted_snapshot_is_not_listed(shop: str, tmp_path: Path) -> None:
    inner = LocalStore(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        backup.create_snapshot(shop, DiesBeforeManifest(inner, KeyboardInterrupt()))
    assert [o.key.endswith("dump.pgc") for o in inner.list()] == [True]
    assert backup.list_snapshots(inner) == []
    with pytest.raises(BadInput, match="no snapshots"):
        backup.resolve(inner, "latest")


def test_a_staged_file_is_linked_in_and_any_other_copied(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with store.staging() as staging:
        staged = staging / "dump"
        staged.write_bytes(b"staged")
        store.put_file("a/dump.pgc", staged, sha256=hashlib.sha256(b"staged").hexdigest())
        assert (tmp_path / "s" / "a" / "dump.pgc").stat().st_ino == staged.stat().st_ino  # not copied
        assert [o.key for o in store.list()] == ["a/dump.pgc"]  # a staging area is never listed
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["a"]
    outside = tmp_path / "outside"
    outside.write_bytes(b"outside")
    store.put_file("b/dump.pgc", outside, sha256=hashlib.sha256(b"outside").hexdigest())
    outside.write_bytes(b"changed later")  # must not reach the stored object
    assert store.get_bytes("b/dump.pgc") == b"outside"
    assert store.get_file("b/dump.pgc", tmp_path / "back") == hashlib.sha256(b"outside").hexdigest()
    assert store.local_path("b/dump.pgc") == tmp_path / "s" / "b" / "dump.pgc"


def test_keys_are_written_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a/b.json", b"1")
    with pytest.raises(ObjectExists):
        store.put_bytes("a/b.json", b"2")
    assert store.get_bytes("a/b.json") == b"1"
    assert [o.key for o in store.list()] == ["a/b.json"]


def test_hashing_in_the_exporting_transaction_or_on_importing_readers_agrees(shop: str, tmp_path: Path) -> None:
    """create hashes in the transaction that exported the snapshot; with hash_workers > 1, on
    connections that import it. Both describe the same snapshot the same way."""
    one = backup.create_snapshot(shop, LocalStore(tmp_path / "one"))
    two = backup.create_snapshot(shop, LocalStore(tmp_path / "two"), hash_workers=2)
    assert one.manifest["tables"] == two.manifest["tables"]
    assert len(one.manifest["tables"]) == 3
