"""Bypass detection against a real server and a real stream: writes that went around the triggers
(session_replication_role = replica, ALTER TABLE ... DISABLE TRIGGER) become bypass gaps in the
mirror and in rewind.gap, with the row images WAL carries; journaled writes make none; and
`rewind status` / `rewind actions` say so."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from helpers import connect_as, rewind, rewind_json, table_state
from stream_helpers import db_scalar, mirror_rows, streaming, wait_for

import journal
from journal.gaps import record_gaps
from journal.mirror import Gap
from journal.stream import Streamer

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, big text);
ALTER TABLE items REPLICA IDENTITY FULL;
CREATE TABLE plain (id int PRIMARY KEY, v text);
CREATE TABLE untracked_t (id int PRIMARY KEY, v text);
INSERT INTO items SELECT g, 'item ' || g, NULL FROM generate_series(1, 10) g;
UPDATE items SET big = repeat(md5(id::text), 400) WHERE id = 1;  -- TOASTed
INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 10) g;
INSERT INTO untracked_t VALUES (1, 'x');
"""


@pytest.fixture
def db(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(SCHEMA)
    journal.init(dsn)
    journal.track(dsn, ["public.items", "public.plain"])
    return dsn


def mirror_gaps(url: str) -> list[Any]:
    return mirror_rows(url, "SELECT kind, xid, table_name, changes, complete, detail, images FROM rewind_gap "
                            "ORDER BY id")


def db_gaps(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT kind, xid, table_name, changes, complete, detail, images FROM rewind.gap "
                         "ORDER BY id").fetchall()


def settle(streamer: Streamer, dsn: str) -> None:
    """Everything committed so far is through the stream: a marker transaction is stamped."""
    with connect_as(dsn, "marker") as c:
        c.execute("UPDATE items SET name = name WHERE id = 5")
        tx = c.execute("SELECT max(id) FROM rewind.tx").fetchone()[0]  # type: ignore[index]
    wait_for(lambda: db_scalar(dsn, "SELECT commit_lsn IS NOT NULL FROM rewind.tx WHERE id = %s", (tx,)),
             what="the marker transaction to be stamped")


def test_session_replication_role_bypass_has_complete_images_under_full_identity(
        db: str, mirror_url: str) -> None:
    with streaming(db, mirror_url) as streamer:
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("UPDATE items SET name = name || '!' WHERE id <= 3")  # id 1: big is TOASTed, unchanged
            c.execute("DELETE FROM items WHERE id = 10")
            xid = str(c.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        gaps = wait_for(lambda: mirror_gaps(mirror_url), what="a gap in the mirror")
        wait_for(lambda: streamer.stats.gaps_total == 1, what="the gap counted")
    kind, gxid, table, changes, complete, detail, images = gaps[0]
    assert (kind, gxid, table, changes, bool(complete)) == ("bypass", xid, "public.items", 4, True)
    assert json.loads(detail)["identity"] == "full"
    images = json.loads(images)
    assert [i["op"] for i in images] == ["U", "U", "U", "D"]
    first = images[0]
    assert first["before"]["name"] == "item 1" and first["after"]["name"] == "item 1!"
    assert first["before"]["big"] == first["after"]["big"] and len(first["after"]["big"]) == 12800
    assert "unchanged" not in first
    assert images[3]["before"] == {"id": "10", "name": "item 10", "big": None} and images[3]["after"] is None
    in_db = wait_for(lambda: db_gaps(db), what="the gap in rewind.gap")
    assert len(in_db) == 1
    assert in_db[0][:5] == ("bypass", xid, "public.items", 4, True)
    assert in_db[0][6] == images


def test_disabled_trigger_counts_only_the_bypassing_rows_and_keeps_keys_only(db: str, sqlite_url: str) -> None:
    """One transaction: journaled inserts, then three updates and a delete with the trigger
    disabled, then a journaled update of a row the bypass also touched: exactly the four are a gap."""
    with streaming(db, sqlite_url) as streamer:
        with connect_as(db, "mixed") as c, c.transaction():
            c.execute("INSERT INTO plain VALUES (11, 'a'), (12, 'b')")
            c.execute("ALTER TABLE plain DISABLE TRIGGER USER")
            c.execute("UPDATE plain SET v = 'quiet' WHERE id IN (1, 2, 3)")
            c.execute("DELETE FROM plain WHERE id = 4")
            c.execute("ALTER TABLE plain ENABLE TRIGGER USER")
            c.execute("UPDATE plain SET v = 'loud' WHERE id = 1")
            c.execute("UPDATE untracked_t SET v = 'y'")
            xid = str(c.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        gaps = wait_for(lambda: mirror_gaps(sqlite_url), what="a gap in the mirror")
        settle(streamer, db)
    assert len(mirror_gaps(sqlite_url)) == 1
    kind, gxid, table, changes, complete, detail, images = gaps[0]
    assert (kind, gxid, table, changes, bool(complete)) == ("bypass", xid, "public.plain", 4, False)
    assert json.loads(detail) == {"identity": "key only", "operations": {"U": 3, "D": 1}}
    images = json.loads(images)
    assert [(i["op"], i["before"], i["after"]) for i in images] == [
        ("U", None, {"id": "1", "v": "quiet"}), ("U", None, {"id": "2", "v": "quiet"}),
        ("U", None, {"id": "3", "v": "quiet"}), ("D", {"id": "4"}, None)]
    assert [g[:5] for g in db_gaps(db)] == [("bypass", xid, "public.plain", 4, False)]
    assert db_scalar(db, "SELECT count(*) FROM rewind.change WHERE tbl = (SELECT id FROM rewind.tracked "
                         "WHERE table_name = 'plain')") == 2 + 1  # the inserts, the loud update


def test_a_truncate_around_the_triggers_is_an_incomplete_gap(db: str, sqlite_url: str) -> None:
    with streaming(db, sqlite_url):
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("TRUNCATE plain")
        gaps = wait_for(lambda: db_gaps(db), what="the gap in rewind.gap")
    kind, _, table, changes, complete, detail, images = gaps[0]
    assert (kind, table, changes, complete) == ("bypass", "public.plain", 1, False)
    assert [{k: i[k] for k in ("op", "before", "after")} for i in images] == [
        {"op": "T", "before": None, "after": None}] and "TRUNCATE" in detail["note"]


def test_a_replayed_gap_is_recorded_once(db: str, conn: psycopg.Connection[Any]) -> None:
    """After a crash between the mirror commit and rewind.gap, the replay writes the same gaps again."""
    bypass = Gap(kind="bypass", complete=False, at="2026-11-24T10:00:00.000000+00:00", xid="42",
                 table_name="public.plain", changes=1, start_lsn=100, end_lsn=200, images=[])
    reset = Gap(kind="slot_reset", complete=False, at="2026-11-24T10:00:01.000000+00:00", start_lsn=100,
                end_lsn=200, detail={"reason": "test"})
    for _ in range(2):
        record_gaps(conn, [bypass, reset])
    assert [g[:4] for g in db_gaps(db)] == [("bypass", "42", "public.plain", 1), ("slot_reset", None, None, None)]


def test_journaled_writes_make_no_gap(db: str, sqlite_url: str) -> None:
    with streaming(db, sqlite_url) as streamer:
        with connect_as(db, "honest") as c:
            c.execute("UPDATE items SET name = name || '?' WHERE id BETWEEN 2 AND 6")
            c.execute("UPDATE plain SET id = id + 100 WHERE id = 5")  # the key changes
            with c.transaction():
                c.execute("INSERT INTO plain VALUES (20, 'x')")
                with pytest.raises(psycopg.errors.UniqueViolation), c.transaction():
                    c.execute("INSERT INTO plain VALUES (21, 'y'), (20, 'dup')")
                c.execute("DELETE FROM items WHERE id = 9")
            c.execute("TRUNCATE plain")
            c.execute("UPDATE untracked_t SET v = 'z'")
        settle(streamer, db)
        assert streamer.stats.changes_total > 0 and streamer.stats.gaps_total == 0
    assert mirror_gaps(sqlite_url) == [] and db_gaps(db) == []


def test_partitioned_tables_journaled_make_no_gap_and_bypassed_do(dsn: str, conn: psycopg.Connection[Any],
                                                                     sqlite_url: str) -> None:
    """Rows of partitions arrive as the root's (publish_via_partition_root), which is what the
    journal names; a journaled UPDATE moving a row across partitions is a DELETE and an INSERT."""
    conn.execute("CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
    conn.execute("CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
    conn.execute("CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us')")
    conn.execute("INSERT INTO m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 6) g")
    journal.init(dsn)
    journal.track(dsn, ["public.m"])
    with streaming(dsn, sqlite_url) as streamer:
        with connect_as(dsn, "mover") as c:
            c.execute("UPDATE m SET region = 'eu' WHERE id = 1")  # moves to the other partition
            c.execute("UPDATE m SET v = v + 1")
            c.execute("DELETE FROM m WHERE id = 6")
        with connect_as(dsn, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("UPDATE m SET v = 0 WHERE id IN (2, 3)")
        gaps = wait_for(lambda: db_gaps(dsn), what="the gap in rewind.gap")
        with connect_as(dsn, "marker") as c:
            c.execute("UPDATE m SET v = v WHERE id = 4")
        wait_for(lambda: streamer.stats.transactions_total >= 4, what="every journaled transaction")
    assert [g[:4] for g in db_gaps(dsn)] == [("bypass", gaps[0][1], "public.m", 2)]
    assert len(mirror_gaps(sqlite_url)) == 1


def test_an_undo_is_no_bypass(db: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The undo sleeps the capture triggers and journals itself from its plan, after its
    statements: every row it wrote is claimed by one of its journal rows."""
    with connect_as(db, "agent-9") as c:
        c.execute("UPDATE items SET name = 'oops' WHERE id <= 4")
        c.execute("DELETE FROM plain WHERE id > 7")
        c.execute("INSERT INTO plain VALUES (30, 'new')")
    with streaming(db, sqlite_url) as streamer:
        code, result = rewind_json(capsys, "undo", "--dsn", db, "--actor", "agent-9", "--yes")
        assert code == 0 and result["rows"] == 8
        settle(streamer, db)
    assert mirror_gaps(sqlite_url) == [] and db_gaps(db) == []


def test_bypass_detection_can_be_turned_off(db: str, sqlite_url: str) -> None:
    """For write-heavy databases that would rather not decode every tracked row twice."""
    with streaming(db, sqlite_url, detect_bypass=False) as streamer:
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("DELETE FROM plain WHERE id = 1")
        settle(streamer, db)
    assert mirror_gaps(sqlite_url) == [] and db_gaps(db) == []


def test_a_complete_gap_adopted_into_the_journal_can_be_undone(db: str, conn: psycopg.Connection[Any],
                                                               sqlite_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = table_state(conn, "public.items")
    with streaming(db, sqlite_url) as streamer:
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("UPDATE items SET name = 'gone wrong' WHERE id <= 3")  # id 1 keeps its TOASTed big
            c.execute("DELETE FROM items WHERE id = 10")
            c.execute("INSERT INTO items VALUES (40, 'forty', NULL)")
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("DELETE FROM plain WHERE id = 1")
        wait_for(lambda: len(db_gaps(db)) == 2, what="both gaps in rewind.gap")
        gaps = {g["table"]: g for g in rewind_json(capsys, "status", "--dsn", db)[1]["gaps"]}
        full, key_only = gaps["public.items"], gaps["public.plain"]
        code, adopted = rewind_json(capsys, "adopt", str(full["id"]), "--dsn", db)
        assert code == 0 and adopted["changes"] == 5
        code, result = rewind_json(capsys, "undo", "--dsn", db, "--action", str(adopted["action"]), "--yes")
        assert code == 0 and result["rows"] == 5
        assert table_state(conn, "public.items") == before
        settle(streamer, db)
    assert len(db_gaps(db)) == 2  # adopting and undoing went through the triggers' journal
    code, _, err = rewind(capsys, "adopt", str(full["id"]), "--dsn", db)
    assert code == 1 and "adopted already" in err
    code, _, err = rewind(capsys, "adopt", str(key_only["id"]), "--dsn", db)
    assert code == 1 and "not a complete bypass" in err
    assert rewind(capsys, "adopt", "999999", "--dsn", db)[0] == 2
    status = rewind_json(capsys, "status", "--dsn", db)[1]
    assert [g["adopted_as"] for g in status["gaps"] if g["table"] == "public.items"] == [adopted["action"]]


def test_status_reports_slot_gaps_and_check(db: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, before = rewind_json(capsys, "status", "--dsn", db)
    assert code == 0 and before["slot"] is None and before["gaps"] == []
    assert rewind(capsys, "status", "--dsn", db, "--check")[0] == 0
    with streaming(db, sqlite_url) as streamer:
        settle(streamer, db)
        code, healthy = rewind_json(capsys, "status", "--dsn", db, "--check", "--max-lag-seconds", "60")
        assert code == 0 and healthy["gaps"] == []
        assert healthy["slot"]["name"] == streamer.slot
        assert isinstance(healthy["slot"]["lag_bytes"], int) and healthy["slot"]["lag_seconds"] < 60
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("INSERT INTO items VALUES (50, 'fifty', NULL)")
            xid = str(c.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        wait_for(lambda: db_gaps(db), what="the gap in rewind.gap")
    code, out, err = rewind(capsys, "status", "--dsn", db, "--json", "--check")
    assert code == 1 and "check failed: 1 capture gap(s) (bypass)" in err
    gap = json.loads(out)["gaps"][0]
    assert {k: gap[k] for k in ("kind", "xid", "table", "changes", "complete")} == {
        "kind": "bypass", "xid": xid, "table": "public.items", "changes": 1, "complete": True}
    assert gap["at"]
    assert rewind(capsys, "status", "--dsn", db, "--check", "--since", "2099-01-01")[0] == 0
    code, out, _ = rewind(capsys, "status", "--dsn", db)
    assert code == 0 and "1 capture gap(s)" in out and "public.items" in out
    with connect_as(db, "later") as c:  # the stream is stopped: this waits in the slot
        c.execute("INSERT INTO plain VALUES (60, 'later')")
    code, lagging = rewind_json(capsys, "status", "--dsn", db)
    assert lagging["slot"]["lag_bytes"] > 0 and lagging["slot"]["lag_seconds"] > 0
    code, _, err = rewind(capsys, "status", "--dsn", db, "--check", "--max-lag-bytes", "0", "--since", "2099-01-01")
    assert code == 1 and "lags" in err
    assert rewind(capsys, "status", "--dsn", db, "--slot", "Bad-Name")[0] == 2


def test_actions_warn_about_bypass_gaps_on_stderr(db: str, sqlite_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with streaming(db, sqlite_url):
        with connect_as(db, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("DELETE FROM plain WHERE id <= 2")
        wait_for(lambda: db_gaps(db), what="the gap in rewind.gap")
    for source in (("--dsn", db), ("--journal", sqlite_url)):
        code, out, err = rewind(capsys, "actions", *source, "--json")
        assert code == 0 and isinstance(json.loads(out), list)
        assert "warning" in err and "2 write(s) to public.plain went around the triggers" in err
        code, out, err = rewind(capsys, "actions", *source, "--until", "2000-01-01")
        assert code == 0 and err == ""


def test_truncating_an_empty_table_through_the_trigger_is_no_bypass(db: str, sqlite_url: str) -> None:
    """capture_truncate journals no row for an empty table; its message says the TRUNCATE was seen."""
    with streaming(db, sqlite_url) as streamer:
        with connect_as(db, "cleaner") as c:
            c.execute("DELETE FROM plain")
            c.execute("TRUNCATE plain")  # empty by now
            c.execute("TRUNCATE plain, items")  # plain empty, items not
        settle(streamer, db)
        assert mirror_gaps(sqlite_url) == [] and db_gaps(db) == []
        with connect_as(db, "sneaky") as c, c.transaction():  # still caught when it goes around the trigger
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("TRUNCATE plain")
        wait_for(lambda: db_gaps(db), what="the bypassing TRUNCATE's gap")
    assert [(g[0], g[2]) for g in db_gaps(db)] == [("bypass", "public.plain")]


def test_adopted_images_keep_json_documents_and_arrays(dsn: str, conn: psycopg.Connection[Any], sqlite_url: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """WAL spells a jsonb value as text; the adopted image holds the document, not a string of it,
    so the undo finds the rows as the images say and puts them back exactly."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, j jsonb, js json, a int[], t text[]);"
                 "ALTER TABLE docs REPLICA IDENTITY FULL;"
                 """INSERT INTO docs VALUES (1, '{"k": [1, 2]}', '{"x": 1}', '{1,2}', '{"a b",NULL}'),"""
                 """(2, '"s"', '[]', '{}', '{}')""")
    journal.init(dsn)
    journal.track(dsn, ["public.docs"])
    before = conn.execute("SELECT d::text FROM docs d ORDER BY id").fetchall()
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("""UPDATE docs SET j = '{"k": 3}', js = '[1]', a = '{9}', t = '{z}' WHERE id = 1""")
            c.execute("DELETE FROM docs WHERE id = 2")
        gap = wait_for(lambda: db_gaps(dsn), what="the gap")
    assert gap[0][4] is True  # complete
    gap_id = rewind_json(capsys, "status", "--dsn", dsn)[1]["gaps"][0]["id"]
    code, adopted = rewind_json(capsys, "adopt", str(gap_id), "--dsn", dsn)
    assert code == 0 and adopted["changes"] == 2
    image = conn.execute("SELECT before FROM rewind.change WHERE tx = %s AND op = 'U'",
                         (adopted["action"],)).fetchone()[0]  # type: ignore[index]
    assert image["j"] == {"k": [1, 2]} and image["js"] == {"x": 1} and image["t"] == ["a b", None]
    code, result = rewind_json(capsys, "undo", "--dsn", dsn, "--action", str(adopted["action"]), "--yes")
    assert code == 0 and result["rows"] == 2
    assert conn.execute("SELECT d::text FROM docs d ORDER BY id").fetchall() == before


def test_changes_filed_under_another_transactions_record_are_a_gap(db: str, sqlite_url: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A session that sets rewind.tx itself files its changes under another transaction's record
    (its actor and role) and writes none of its own; WAL says which transaction wrote the journal
    rows, so the stream records that as a gap, and status --check fails on it."""
    with streaming(db, sqlite_url) as streamer:
        with connect_as(db, "person") as c:
            c.execute("UPDATE plain SET v = 'person' WHERE id = 1")
            victim = c.execute("SELECT max(id) FROM rewind.tx").fetchone()[0]  # type: ignore[index]
        with connect_as(db, "agent-x") as a:
            a.execute("SELECT set_config('rewind.tx', %s, false)", (str(victim),))
            with a.transaction():
                a.execute("UPDATE plain SET v = 'agent' WHERE id = 2")
                a.execute("DELETE FROM items WHERE id = 9")
                xid = str(a.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        gaps = wait_for(lambda: mirror_gaps(sqlite_url), what="a gap in the mirror")
        wait_for(lambda: streamer.stats.gaps_total == 1, what="the gap counted")
        settle(streamer, db)
    kind, gxid, table, changes, complete, detail, images = gaps[0]
    assert (kind, gxid, table, changes, bool(complete), images) == ("bypass", xid, None, 2, False, None)
    assert json.loads(detail) == {"misfiled": True, "tables": {"public.plain": 1, "public.items": 1}, "ddl": 0,
                                  "filed_under": [victim], "own_records": []}
    assert len(db_gaps(db)) == 1 and streamer.stats.gaps_total == 1  # the settling transaction filed its own
    with psycopg.connect(db) as c:  # what the gap warns about: the journal names the person
        assert c.execute("SELECT count(*) FROM rewind.change WHERE tx = %s", (victim,)).fetchone() == (3,)
        assert c.execute("SELECT count(*) FROM rewind.tx WHERE actor = 'agent-x'").fetchone() == (0,)
    code, out, err = rewind(capsys, "status", "--dsn", db, "--check")
    assert code == 1 and "check failed: 1 capture gap(s) (bypass)" in err
    assert f"xid {xid} filed 2 journal row(s) under action(s) {victim}" in " ".join(out.split())
    code, out, err = rewind(capsys, "actions", "--journal", sqlite_url, "--json")
    assert code == 0 and "2 journal row(s) filed under another transaction's record in 1 transaction(s)" in err
