"""Stream mode (rewind track --mode stream) against a real server and a real stream: the row
images come from WAL and the context from one logical message per transaction; every attribution
field arrives; preview and undo give what journal mode gives for the same workload; writes around
the context trigger are bypasses; switching modes and untracking put the replica identity back;
a replay journals nothing twice."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from helpers import connect_as, database_state, rewind, rewind_json
from psycopg import sql
from stream_helpers import db_scalar, mirror_rows, mirror_scalar, streaming, wait_for
from test_matrix import LOSSY, TYPE_CASES

import journal
from journal.mirror.store import MirrorStore

TYPED = [c for c in TYPE_CASES if c.id not in LOSSY]


def _column(i: int) -> str:
    return f"c{i}"


SCHEMA = "\n".join(dict.fromkeys(c.setup + ";" for c in TYPED if c.setup)) + f"""
CREATE TABLE wide (id int PRIMARY KEY, {", ".join(f"{_column(i)} {c.type}" for i, c in enumerate(TYPED))}, big text);
CREATE TABLE pair (a int, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE bag (grp int, v text);
CREATE TABLE part (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE, v text);
CREATE TABLE grandchild (id int PRIMARY KEY, child_id int REFERENCES child ON DELETE CASCADE, v text);
CREATE TABLE scratch (id int PRIMARY KEY, v text);
CREATE TABLE marker (id serial PRIMARY KEY);
INSERT INTO pair SELECT g % 3, 'k' || g, 'v' || g FROM generate_series(1, 9) g;
INSERT INTO bag SELECT g % 2, 'same' FROM generate_series(1, 6) g;
INSERT INTO part SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 6) g;
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 3) g;
INSERT INTO child SELECT g, g % 3 + 1, 'c' || g FROM generate_series(1, 6) g;
INSERT INTO grandchild SELECT g, g % 6 + 1, 'g' || g FROM generate_series(1, 12) g;
INSERT INTO scratch SELECT g, 's' || g FROM generate_series(1, 5) g;
"""
# Rows of `wide`: row i holds each type's i-th value (wrapping), row 1 a TOASTed `big` over 1 MB.
SEED_WIDE = [
    "INSERT INTO wide VALUES ({}, {}, NULL)".format(
        row, ", ".join(f"({c.values[row % len(c.values)]})::{c.type}" for c in TYPED))
    for row in range(1, 7)
] + ["UPDATE wide SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g) WHERE id = 1"]

TABLES = ["public.wide", "public.pair", "public.bag", "public.part", "public.parent", "public.child",
          "public.grandchild", "public.scratch"]

AGENT_WORK = [
    "UPDATE wide SET c0 = c0 WHERE id <= 2",  # id 1 keeps its TOASTed big: WAL does not repeat it
    "UPDATE wide SET big = big || 'x' WHERE id = 1",
    "UPDATE wide SET ({}) = (SELECT {} FROM wide w WHERE w.id = 3) WHERE id = 2".format(
        ", ".join(_column(i) for i in range(len(TYPED))), ", ".join(f"w.{_column(i)}" for i in range(len(TYPED)))),
    "DELETE FROM wide WHERE id = 4",
    "INSERT INTO wide SELECT id + 100, " + ", ".join(_column(i) for i in range(len(TYPED))) + ", big FROM wide "
    "WHERE id IN (1, 5)",
    "UPDATE pair SET v = 'agent' WHERE a = 1",
    "UPDATE pair SET b = b || '!' WHERE a = 2",  # key change
    "DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE grp = 0)",
    "INSERT INTO bag VALUES (0, 'same'), (5, 'new')",
    "UPDATE part SET region = 'eu' WHERE id = 1",  # moves to another partition
    "UPDATE part SET v = v * 10",
    "DELETE FROM parent WHERE id = 1",  # cascades over three levels
    "TRUNCATE scratch",
]
PERSON_WORK = [
    "UPDATE wide SET c1 = c1 WHERE id = 6",
    "INSERT INTO pair VALUES (7, 'person', 'p')",
    "UPDATE part SET v = -1 WHERE id = 2",  # after the agent's v * 10: a conflict
    "INSERT INTO scratch VALUES (1, 'person again')",  # where the agent truncated: a conflict
]


def setup(dsn: str, mode: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SCHEMA)  # type: ignore[arg-type]
        for statement in SEED_WIDE:
            c.execute(statement)  # type: ignore[arg-type]
    journal.init(dsn)
    journal.track(dsn, [*TABLES, "public.marker"], mode=mode)


# after which of the agent's statements each of the person's runs
PERSON_AFTER = {2: PERSON_WORK[0], 5: PERSON_WORK[1], 10: PERSON_WORK[2], 12: PERSON_WORK[3]}


def work(dsn: str) -> None:
    """The agent's statements and a person's, interleaved; each its own transaction."""
    with connect_as(dsn, "agent-7", run_id="run-1") as agent, connect_as(dsn, "person") as person:
        for i, statement in enumerate(AGENT_WORK):
            agent.execute(statement)  # type: ignore[arg-type]
            if i in PERSON_AFTER:
                person.execute(PERSON_AFTER[i])  # type: ignore[arg-type]


def settle(dsn: str) -> None:
    """Everything committed so far is journaled: a marker transaction has been ingested."""
    with connect_as(dsn, "marker") as c, c.transaction():
        c.execute("INSERT INTO marker DEFAULT VALUES")
        lsn = c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]  # type: ignore[index]
    wait_for(lambda: db_scalar(dsn, "SELECT coalesce(max(commit_lsn) >= %s::pg_lsn, false) FROM rewind.ingested",
                               (lsn,)), what="the marker transaction to be journaled")


def comparable(preview: dict[str, Any]) -> dict[str, Any]:
    conflicts = sorted((c["table"], str(c["pk"]), str(c["expected"]), str(c["actual"]), c["changed_by"])
                       for c in preview["conflicts"])
    return {"tables": preview["tables"], "conflicts": conflicts}


def test_preview_and_undo_match_journal_mode(dsn: str, twin: str, sqlite_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    setup(dsn, "journal")
    setup(twin, "stream")
    with psycopg.connect(twin) as c:
        assert c.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s) AND relreplident = 'f'",
                         (["wide", "part", "part_eu", "part_us", "bag"],)).fetchone() == (5,)
    with streaming(twin, sqlite_url):
        work(dsn)
        work(twin)
        settle(twin)
        assert db_scalar(twin, "SELECT count(*) FROM rewind.gap") == 0
        with psycopg.connect(dsn) as a, psycopg.connect(twin) as b:
            assert database_state(a, TABLES) == database_state(b, TABLES)
            worked = database_state(a, TABLES)

        previews = [rewind_json(capsys, "preview", "--dsn", d, "--actor", "agent-*") for d in (dsn, twin)]
        assert [code for code, _ in previews] == [0, 0]
        journal_preview, stream_preview = (p for _, p in previews)
        assert journal_preview["conflicts"], "the workload makes no conflict: the test proves less than it says"
        assert comparable(stream_preview) == comparable(journal_preview)

        results = [rewind_json(capsys, "undo", "--dsn", d, "--actor", "agent-*", "--on-conflict", "skip", "--yes")
                   for d in (dsn, twin)]
        assert [code for code, _ in results] == [0, 0]
        assert results[0][1]["rows"] == results[1][1]["rows"] > 0
        assert results[0][1]["skipped"] == results[1][1]["skipped"] > 0
        with psycopg.connect(dsn) as a, psycopg.connect(twin) as b:
            undone = database_state(a, TABLES)
            assert undone != worked and database_state(b, TABLES) == undone

        # undoing the undo brings the agent's state back, in both modes alike
        for d, (_, result) in zip((dsn, twin), results, strict=True):
            code, again = rewind_json(capsys, "undo", "--dsn", d, "--action", str(result["action"]), "--yes")
            assert code == 0, again
        settle(twin)
        assert db_scalar(twin, "SELECT count(*) FROM rewind.gap") == 0  # the undos were journaled, not bypasses
    with psycopg.connect(dsn) as a, psycopg.connect(twin) as b:
        assert database_state(a, TABLES) == database_state(b, TABLES) == worked


def test_every_attribution_field_arrives(dsn: str, mirror_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup(dsn, "stream")
    with streaming(dsn, mirror_url):
        with connect_as(dsn, "agent-9", run_id="run-42", application="nightly-sync") as agent, agent.transaction():
            agent.execute("UPDATE pair SET v = 'x' WHERE a = 0")
            agent.execute("DELETE FROM bag WHERE grp = 1")
            agent.execute("INSERT INTO part VALUES (10, 'us', 1)")
            xid, pid, started, addr = agent.execute(
                "SELECT pg_current_xact_id()::text, pg_backend_pid(), now(), inet_client_addr()").fetchone()  # type: ignore[misc]
        settle(dsn)
        with psycopg.connect(dsn) as c:
            row = c.execute("SELECT id, xid::text, actor, role, application, client_addr, pid, run, started_at, "
                            "commit_lsn IS NOT NULL, committed_at >= started_at FROM rewind.tx WHERE actor = 'agent-9'"
                            ).fetchall()
            changes = c.execute("SELECT k.table_name, c.op::text, count(*) FROM rewind.change c "
                                "JOIN rewind.tracked k ON k.id = c.tbl JOIN rewind.tx t ON t.id = c.tx "
                                "WHERE t.actor = 'agent-9' GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            role = c.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        assert len(row) == 1
        action, got_xid, actor, got_role, application, client_addr, got_pid, run, got_started, lsn, order = row[0]
        assert (got_xid, actor, got_role, application, got_pid, run, got_started, lsn, order) == \
            (xid, "agent-9", role, "nightly-sync", pid, "run-42", started, True, True)
        assert client_addr == addr is not None
        assert changes == [("bag", "D", 3), ("pair", "U", 3), ("part", "I", 1)]
        wait_for(lambda: mirror_scalar(mirror_url, f"SELECT count(*) FROM rewind_change WHERE tx = {action}") == 7,
                 what="the ingested changes in the mirror")
    code, from_mirror = rewind_json(capsys, "actions", "--journal", mirror_url, "--actor", "agent-9")
    assert code == 0 and len(from_mirror) == 1
    entry = from_mirror[0]
    assert (entry["id"], entry["xid"], entry["actor"], entry["application"], entry["run"], entry["changes"]) == \
        (action, xid, "agent-9", "nightly-sync", "run-42", 7)
    assert entry["committed_at"] is not None
    assert entry["tables"]["public.part"]["insert"] == 1


def test_images_equal_what_the_triggers_write(dsn: str, sqlite_url: str) -> None:
    """The same rows journaled by the triggers (journal mode) and from WAL (stream mode) have equal
    images, type by type, the TOASTed value included."""
    setup(dsn, "journal")
    with connect_as(dsn, "agent") as c:
        c.execute("UPDATE wide SET id = id")
    journal.track(dsn, ["public.wide", "public.marker"], mode="stream")
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "agent") as c:
            c.execute("UPDATE wide SET id = id")
        settle(dsn)
    with psycopg.connect(dsn) as c:
        images = c.execute("SELECT t.id, c.before, c.after FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx "
                           "WHERE t.actor = 'agent' ORDER BY t.id, (c.before->>'id')::int").fetchall()
    by_tx: dict[int, list[Any]] = {}
    for tx, before, after in images:
        by_tx.setdefault(tx, []).append((before, after))
    journaled, streamed = by_tx.values()
    assert len(journaled) == 6 and streamed == journaled
    assert len(streamed[0][0]["big"]) == 40000 * 32


def test_writes_around_the_context_trigger_are_complete_bypasses(dsn: str, sqlite_url: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    setup(dsn, "stream")
    with psycopg.connect(dsn) as c:
        before = database_state(c, ["public.pair"])
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "sneaky") as c, c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")
            c.execute("UPDATE pair SET v = 'quiet' WHERE a = 1")
        with connect_as(dsn, "sneaky") as c, c.transaction():
            c.execute("ALTER TABLE pair DISABLE TRIGGER rewind_capture_s")
            c.execute("DELETE FROM pair WHERE a = 2")
            c.execute("ALTER TABLE pair ENABLE TRIGGER rewind_capture_s")
        settle(dsn)
        code, status = rewind_json(capsys, "status", "--dsn", dsn)
        gaps = sorted(status["gaps"], key=lambda g: g["id"])
        assert [(g["kind"], g["table"], g["changes"], g["complete"]) for g in gaps] == \
            [("bypass", "public.pair", 3, True), ("bypass", "public.pair", 3, True)]
        assert db_scalar(dsn, "SELECT count(*) FROM rewind.tx WHERE actor = 'sneaky'") == 1  # the ALTERs' DDL record
        for gap in gaps:
            code, adopted = rewind_json(capsys, "adopt", str(gap["id"]), "--dsn", dsn)
            assert code == 0 and adopted["changes"] == 3
            assert rewind_json(capsys, "undo", "--dsn", dsn, "--action", str(adopted["action"]), "--yes")[0] == 0
    with psycopg.connect(dsn) as c:
        assert database_state(c, ["public.pair"]) == before


def test_truncate_in_stream_mode_is_journaled_by_its_trigger(dsn: str, sqlite_url: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    setup(dsn, "stream")
    with psycopg.connect(dsn) as c:
        before = database_state(c, ["public.scratch", "public.pair"])
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "agent-t") as c, c.transaction():
            c.execute("UPDATE pair SET v = 'gone' WHERE a = 0")
            c.execute("TRUNCATE scratch")
        settle(dsn)
        assert db_scalar(dsn, "SELECT count(*) FROM rewind.gap") == 0
        # one action: the TRUNCATE's journal record, which the streamed rows joined
        code, actions = rewind_json(capsys, "actions", "--dsn", dsn, "--actor", "agent-t")
        assert code == 0 and len(actions) == 1 and actions[0]["changes"] == 3 + 5
        assert rewind_json(capsys, "undo", "--dsn", dsn, "--actor", "agent-t", "--yes")[0] == 0
    with psycopg.connect(dsn) as c:
        assert database_state(c, ["public.scratch", "public.pair"]) == before


def identity(dsn: str, table: str) -> str:
    return str(db_scalar(dsn, "SELECT relreplident::text FROM pg_class WHERE oid = %s::regclass", (table,)))


def test_switching_modes_and_untracking_restore_the_replica_identity(dsn: str, conn: psycopg.Connection[Any],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute(SCHEMA)  # type: ignore[arg-type]
    conn.execute("ALTER TABLE pair REPLICA IDENTITY NOTHING")
    journal.init(dsn)
    code, out, _ = rewind(capsys, "track", "--dsn", dsn, "public.part", "public.pair", "--mode", "stream")
    assert code == 0 and "public.part (stream)" in out and "replication slot" in out
    assert [identity(dsn, t) for t in ("part", "part_eu", "part_us", "pair")] == ["f"] * 4
    assert db_scalar(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname = 'rewind_capture_s'") == 4
    assert db_scalar(dsn, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == 1
    # a new partition of a stream-mode table is captured the same way
    conn.execute("CREATE TABLE part_ap PARTITION OF part FOR VALUES IN ('ap')")
    assert identity(dsn, "part_ap") == "f"
    assert db_scalar(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rewind_capture_%%' "
                          "AND tgrelid = 'part_ap'::regclass") == 2
    # tracking again without --mode keeps the mode; --mode journal goes back
    assert rewind_json(capsys, "track", "--dsn", dsn, "public.part")[1][0]["mode"] == "stream"
    code, tracked = rewind_json(capsys, "track", "--dsn", dsn, "public.part", "--mode", "journal")
    assert code == 0 and {t["table"]: t["mode"] for t in tracked}["public.part"] == "journal"
    assert [identity(dsn, t) for t in ("part", "part_eu", "part_us", "part_ap")] == ["d"] * 4
    assert db_scalar(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname = 'rewind_capture_s'") == 1
    assert db_scalar(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname = 'rewind_capture_u' "
                          "AND tgrelid = 'part_eu'::regclass") == 1
    assert rewind(capsys, "untrack", "--dsn", dsn, "public.pair")[0] == 0
    assert identity(dsn, "pair") == "n"
    assert db_scalar(dsn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rewind_capture_%%'") == 4 * 4


def test_stream_mode_bad_input_changes_nothing(dsn: str, conn: psycopg.Connection[Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)")
    conn.execute("CREATE TABLE base (id int PRIMARY KEY); CREATE TABLE sub () INHERITS (base)")
    conn.execute("CREATE TABLE ok (id int PRIMARY KEY)")
    journal.init(dsn)
    for args, message in ((["public.ok", "public.gen"], "generated columns (b)"),
                          (["public.base"], "inheritance children"),
                          (["public.ok", "--mode", "wal"], "unknown mode"),
                          (["public.ok", "--slot", "Bad-Name"], "bad slot name")):
        extra = [] if "--mode" in args else ["--mode", "stream"]
        code, out, err = rewind(capsys, "track", "--dsn", dsn, *args, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.tracked") == 0
    assert db_scalar(dsn, "SELECT count(*) FROM pg_replication_slots") == 0
    assert identity(dsn, "ok") == "d"


def test_a_replay_journals_nothing_twice(dsn: str, conn: psycopg.Connection[Any], sqlite_url: str,
                                         tmp_path: Any) -> None:
    """What a crash between journaling the rows and the slot's confirmation leaves: a stream that
    brings the same transactions again (a second slot created at the same point)."""
    setup(dsn, "stream")
    conn.execute("SELECT pg_create_logical_replication_slot('second_slot', 'pgoutput')")
    with streaming(dsn, sqlite_url):
        work(dsn)
        settle(dsn)
    counts = conn.execute("SELECT (SELECT count(*) FROM rewind.change), (SELECT count(*) FROM rewind.tx), "
                          "(SELECT count(*) FROM rewind.ingested)").fetchone()
    assert counts is not None and counts[0] > 0
    with streaming(dsn, f"sqlite:///{tmp_path}/second.sqlite", slot="second_slot"):
        settle(dsn)
    again = conn.execute("SELECT (SELECT count(*) FROM rewind.change), (SELECT count(*) FROM rewind.tx), "
                         "(SELECT count(*) FROM rewind.ingested)").fetchone()
    assert again == (counts[0] + 1, counts[1] + 1, counts[2] + 1)  # only the second marker


def test_journaled_but_not_mirrored_is_read_back(dsn: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between journaling the rows in the database and the mirror's commit: the next try
    finds them journaled, and mirrors them from the database, once."""
    setup(dsn, "stream")
    failed = []
    real_write = MirrorStore.write

    def failing_write(self: MirrorStore, batch: Any, **kw: Any) -> None:
        if not failed and any(c[3] == str(c[1]) for c in batch.changes):  # stream rows are keyed by position
            failed.append(len(batch.changes))
            raise OSError("the mirror's disk went away")
        real_write(self, batch, **kw)

    monkeypatch.setattr(MirrorStore, "write", failing_write)
    with streaming(dsn, sqlite_url) as streamer:
        with connect_as(dsn, "agent-r") as c:
            c.execute("UPDATE pair SET v = 'r' WHERE a = 0")
        settle(dsn)
        wait_for(lambda: streamer.stats.mirror_errors_total == 1 and failed, what="the failed mirror write")
        wait_for(lambda: mirror_scalar(sqlite_url, "SELECT count(*) FROM rewind_change c JOIN rewind_tx t "
                                                   "ON t.id = c.tx WHERE t.actor = 'agent-r'") == 3,
                 what="the journaled rows in the mirror")
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx "
                          "WHERE t.actor = 'agent-r'") == 3
    assert mirror_scalar(sqlite_url, "SELECT count(*) FROM rewind_tx WHERE actor = 'agent-r'") == 1
    assert mirror_scalar(sqlite_url, "SELECT count(*) FROM rewind_change") == \
        db_scalar(dsn, "SELECT count(*) FROM rewind.change")


def test_an_undo_with_the_tables_triggers_firing_is_journaled_by_the_sidecar(
        dsn: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup(dsn, "stream")
    with psycopg.connect(dsn) as c:
        before = database_state(c, ["public.pair"])
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "agent-f") as c:
            c.execute("UPDATE pair SET v = 'f' WHERE a = 0")
        settle(dsn)
        code, result = rewind_json(capsys, "undo", "--dsn", dsn, "--actor", "agent-f", "--fire-triggers", "--yes")
        assert code == 0 and result["rows"] == 3
        settle(dsn)
        assert db_scalar(dsn, "SELECT count(*) FROM rewind.change WHERE tx = %s AND op = 'U'",
                         (result["action"],)) == 3
        assert db_scalar(dsn, "SELECT count(*) FROM rewind.gap") == 0
    with psycopg.connect(dsn) as c:
        assert database_state(c, ["public.pair"]) == before


RULE_SAMPLES = {
    "int2": ["0", "-32768", "32767"], "int4": ["-2147483648", "42"], "int8": ["9223372036854775807"],
    "bool": ["t", "f"],
    "numeric": ["0", "1.500", "-0.000001", "123456789012345678901234567890.12", "NaN", "Infinity", "-Infinity"],
    "text": ['it\'s a \\ backslash, a "quote",\na newline\tand a tab', "ünïcödé ✓ 日本語 🎉", "", "\x01\x1f"],
    "varchar": ["abc"], "bpchar": ["ab   "], "name": ["n"], "uuid": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
    "json": ['{"b": 1,  "a": 2, "a": 3}', '"s"', "[1, 2.50]"], "jsonb": ['{"a": {"b": [1, null]}}', "1e-30"],
    "timestamp": ["2024-01-01 12:34:56.789012", "1999-12-31 23:59:59"],
    "timestamptz": ["2024-06-01 10:00:00.123456+00", "1970-01-01 00:00:00+00"],
    "date": ["2024-02-29", "9999-12-31"],
}
NOT_SIMPLE = {"timestamp": ["infinity", "0001-01-01 00:00:00 BC"], "timestamptz": ["-infinity"],
              "date": ["0044-03-15 BC", "infinity"]}


def test_images_written_by_the_sidecar_equal_to_jsonb(conn: psycopg.Connection[Any]) -> None:
    """The fixed rules of the COPY path give what to_jsonb gives, value by value; values outside
    them are refused (their group takes the SQL path)."""
    from journal.ingest import _JSON_OF, _NotSimple

    conn.execute("SET TimeZone = 'UTC'")
    for type_name, samples in RULE_SAMPLES.items():
        oid = conn.execute("SELECT %s::regtype::oid", (type_name,)).fetchone()[0]  # type: ignore[index]
        for text in samples:
            ours = _JSON_OF[oid](text)
            same = conn.execute(sql.SQL("SELECT %s::jsonb = to_jsonb(%s::text::{})").format(sql.Identifier(type_name)),
                                (ours, text)).fetchone()[0]  # type: ignore[index]
            assert same, (type_name, text, ours)
    for type_name, samples in NOT_SIMPLE.items():
        oid = conn.execute("SELECT %s::regtype::oid", (type_name,)).fetchone()[0]  # type: ignore[index]
        for text in samples:
            with pytest.raises(_NotSimple):
                _JSON_OF[oid](text)


def test_a_table_entering_stream_mode_mid_session_is_followed(dsn: str, sqlite_url: str) -> None:
    """Without bypass detection the stream reads the journal only; a table switched to stream
    mode while it runs makes it start again with the tracked tables' rows."""
    setup(dsn, "journal")
    with streaming(dsn, sqlite_url, detect_bypass=False) as streamer:
        assert "rewind_tables" not in streamer.publications
        journal.track(dsn, ["public.pair", "public.marker"], mode="stream")
        with connect_as(dsn, "agent-m") as c:
            c.execute("UPDATE pair SET v = 'm' WHERE a = 0")
        settle(dsn)
        assert "rewind_tables" in streamer.publications
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx "
                          "WHERE t.actor = 'agent-m'") == 3


def test_writes_before_the_first_start_are_journaled_from_the_kept_slot(dsn: str, sqlite_url: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """track --mode stream creates the slot; what is written before `rewind serve` first runs waits
    in WAL and is journaled on its first start, into the database and the new mirror."""
    setup(dsn, "stream")
    with connect_as(dsn, "agent-early") as c:
        c.execute("UPDATE pair SET v = 'early' WHERE a = 0")
        c.execute("DELETE FROM bag WHERE grp = 1")
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.tx WHERE actor = 'agent-early'") == 0
    with streaming(dsn, sqlite_url):
        settle(dsn)
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx "
                          "WHERE t.actor = 'agent-early'") == 6
    assert mirror_scalar(sqlite_url, "SELECT count(*) FROM rewind_change") == \
        db_scalar(dsn, "SELECT count(*) FROM rewind.change")
    code, actions = rewind_json(capsys, "actions", "--journal", sqlite_url, "--actor", "agent-early")
    assert code == 0 and [a["changes"] for a in actions] == [3, 3]


def test_rows_the_journal_cannot_hold_become_a_gap_not_a_stuck_stream(dsn: str, conn: psycopg.Connection[Any],
                                                                      sqlite_url: str) -> None:
    """json keeps a NUL escape that jsonb refuses: in journal mode the trigger would fail the
    write; in stream mode the write is done, and its rows are a gap while the stream goes on."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body json); CREATE TABLE marker (id serial PRIMARY KEY)")
    journal.init(dsn)
    journal.track(dsn, ["public.notes", "public.marker"], mode="stream")
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "agent-n") as c:
            c.execute("""INSERT INTO notes VALUES (1, '{"ok": true}')""")
            c.execute("""INSERT INTO notes VALUES (2, '{"bad": "\\u0000"}')""")
            c.execute("""UPDATE notes SET body = '{"ok": false}' WHERE id = 1""")
        settle(dsn)
        gaps = wait_for(lambda: db_scalar(dsn, "SELECT json_agg(json_build_object('complete', complete, "
                                               "'changes', changes, 'note', detail->>'note')) FROM rewind.gap"),
                        what="the gap")
    assert len(gaps) == 1 and gaps[0]["complete"] is False and gaps[0]["changes"] == 1
    assert "could not journal" in gaps[0]["note"]
    assert db_scalar(dsn, "SELECT count(*) FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx "
                          "WHERE t.actor = 'agent-n'") == 2


def test_the_copy_path_escapes_what_copy_text_format_reserves(dsn: str, sqlite_url: str) -> None:
    """Values of the fixed-rule types go in as COPY text the sidecar writes itself: backslashes,
    tabs, newlines and carriage returns in text and in json's own whitespace must arrive as they
    were, in the database and in the mirror."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE plain (id int PRIMARY KEY, t text, j json, b jsonb)")
        c.execute("CREATE TABLE marker (id serial PRIMARY KEY)")
    journal.init(dsn)
    journal.track(dsn, ["public.plain", "public.marker"], mode="stream")
    texts = ["a \\ backslash\tand a tab", "a newline\nand a return\r", "\\N", "\\.", 'quote " \\" \\\\']
    with streaming(dsn, sqlite_url):
        with connect_as(dsn, "agent") as c:
            for i, text in enumerate(texts):
                c.execute("INSERT INTO plain VALUES (%s, %s, %s, %s)",
                          (i, text, '{\n\t"k": "v\\\\"\r\n}', psycopg.types.json.Jsonb({"k": text})))
            c.execute("UPDATE plain SET t = t || E'\\\\\\t'")
        settle(dsn)
        with psycopg.connect(dsn) as c:
            mismatched = c.execute("""
                SELECT c.op, c.before, c.after, to_jsonb(p) FROM rewind.change c
                JOIN rewind.tracked k ON k.id = c.tbl AND k.table_name = 'plain'
                JOIN plain p ON p.id = (coalesce(c.after, c.before)->>'id')::int
                WHERE (c.op = 'I' AND c.after::text <> (to_jsonb(p) - 't' || jsonb_build_object('t',
                          left(p.t, length(p.t) - 2)))::text)
                   OR (c.op = 'U' AND c.after <> to_jsonb(p))""").fetchall()
            in_db = {str(pos): after for pos, after in c.execute(
                "SELECT pos, after FROM rewind.change WHERE src = 's' AND after ? 't'")}
        assert mismatched == [] and len(in_db) == 2 * len(texts)
    in_mirror = {str(pos): json.loads(after) for pos, after in mirror_rows(
        sqlite_url, "SELECT pos, after FROM rewind_change WHERE after LIKE '%\"t\"%'")}
    assert in_mirror == in_db
