"""The pgoutput parser against what a real server sends: every message type, enum and composite
columns (Type messages), unchanged TOAST, REPLICA IDENTITY FULL, and a relation altered mid-stream.

The payloads come from pg_logical_slot_get_binary_changes on a pgoutput slot, which produces the
same bytes a replication connection receives."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from journal.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Decoder,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputMessage,
    ProtocolError,
    Relation,
    Truncate,
    Type,
    Update,
    format_lsn,
    parse_lsn,
)

SLOT = "parser_test"


def drain(conn: psycopg.Connection[Any], decoder: Decoder) -> list[PgOutputMessage]:
    rows = conn.execute(
        "SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
        "'publication_names', 'p', 'messages', 'true')", (SLOT,)).fetchall()
    return [decoder.decode(bytes(data)) for _, data in rows]


@pytest.fixture
def slot(conn: psycopg.Connection[Any]) -> Any:
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    conn.execute("CREATE TYPE point2 AS (x int, y int)")
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, m mood, p point2, big text, n numeric, note text)")
    conn.execute("ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL")  # out of line, uncompressed
    conn.execute("CREATE TABLE full_t (id int, v text)")
    conn.execute("ALTER TABLE full_t REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION p FOR TABLE t, full_t")
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
    yield
    conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))


def of(messages: list[PgOutputMessage], kind: type) -> list[Any]:
    return [m for m in messages if isinstance(m, kind)]


def test_every_message_type_from_a_real_stream(conn: psycopg.Connection[Any], slot: None) -> None:
    decoder = Decoder()
    big = "x" * 300_000
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1, 'happy', ROW(1, 2), %s, 1.50, 'it''s')", (big,))
        conn.execute("INSERT INTO t (id) VALUES (2)")
        conn.execute("SELECT pg_logical_emit_message(true, 'rewind.test', 'in tx')")
    conn.execute("UPDATE t SET note = 'changed' WHERE id = 1")  # big is unchanged TOAST
    conn.execute("UPDATE t SET id = 10 WHERE id = 2")  # key change: old key sent
    conn.execute("DELETE FROM t WHERE id = 10")
    conn.execute("INSERT INTO full_t VALUES (1, 'a')")
    conn.execute("UPDATE full_t SET v = 'b'")
    conn.execute("DELETE FROM full_t")
    conn.execute("SELECT pg_logical_emit_message(false, 'rewind.heartbeat', '')")
    conn.execute("TRUNCATE t, full_t")
    msgs = drain(conn, decoder)

    begins, commits = of(msgs, Begin), of(msgs, Commit)
    assert len(begins) == len(commits) >= 8
    for b, c in zip(begins, commits, strict=True):
        assert b.final_lsn == c.commit_lsn < c.end_lsn and b.commit_time == c.commit_time
        assert b.xid > 0

    types = {t.name: t for t in of(msgs, Type)}
    assert {"mood", "point2"} <= set(types) and types["mood"].namespace == "public"
    rel = next(r for r in of(msgs, Relation) if r.name == "t")
    assert rel.namespace == "public" and rel.replica_identity == "d"
    assert rel.column_names == ("id", "m", "p", "big", "n", "note")
    assert [c.key for c in rel.columns] == [True, False, False, False, False, False]
    assert rel.columns[1].type_oid == types["mood"].oid and decoder.types[types["point2"].oid].name == "point2"
    assert rel.columns[4].type_modifier == -1

    inserts = [m for m in of(msgs, Insert) if m.relation.name == "t"]
    assert inserts[0].new == ("1", "happy", "(1,2)", big, "1.50", "it's")
    assert inserts[1].new == ("2", None, None, None, None, None)

    in_tx = [m for m in of(msgs, Message) if m.transactional]
    assert [(m.prefix, m.content) for m in in_tx] == [("rewind.test", b"in tx")]
    heartbeat = next(m for m in of(msgs, Message) if not m.transactional)
    assert heartbeat.prefix == "rewind.heartbeat" and heartbeat.content == b"" and heartbeat.lsn > 0

    updates = of(msgs, Update)
    toast = updates[0]
    assert toast.new[3] is UNCHANGED and toast.new[3] is not None and toast.new[5] == "changed"
    assert toast.old is None and toast.old_kind is None
    key_change = updates[1]
    assert key_change.old_kind == "K" and key_change.old is not None and key_change.old[0] == "2"
    assert key_change.new[0] == "10"
    full_update = updates[2]
    assert full_update.relation.replica_identity == "f"
    assert full_update.old_kind == "O" and full_update.old == ("1", "a") and full_update.new == ("1", "b")

    deletes = of(msgs, Delete)
    assert deletes[0].old_kind == "K" and deletes[0].old == ("10", None, None, None, None, None)
    assert deletes[1].old_kind == "O" and deletes[1].old == ("1", "b")

    (truncate,) = of(msgs, Truncate)
    assert {r.name for r in truncate.relations} == {"t", "full_t"}
    assert not truncate.cascade and not truncate.restart_identity


def test_truncate_options_and_origin(conn: psycopg.Connection[Any], slot: None) -> None:
    conn.execute("SELECT pg_replication_origin_create('elsewhere')")
    conn.execute("SELECT pg_replication_origin_session_setup('elsewhere')")
    with conn.transaction():
        conn.execute("SELECT pg_replication_origin_xact_setup('0/12345678', now())")
        conn.execute("INSERT INTO t (id) VALUES (5)")
    conn.execute("SELECT pg_replication_origin_session_reset()")
    conn.execute("TRUNCATE t RESTART IDENTITY CASCADE")
    msgs = drain(conn, Decoder())
    (origin,) = of(msgs, Origin)
    assert origin.name == "elsewhere" and origin.commit_lsn == parse_lsn("0/12345678")
    (truncate,) = of(msgs, Truncate)
    assert truncate.cascade and truncate.restart_identity


def test_relation_cache_follows_alter_table(conn: psycopg.Connection[Any], slot: None) -> None:
    decoder = Decoder()
    conn.execute("INSERT INTO t (id, note) VALUES (1, 'before')")
    conn.execute("ALTER TABLE t ADD COLUMN extra int DEFAULT 7, DROP COLUMN n")
    conn.execute("INSERT INTO t (id, note) VALUES (2, 'after')")
    conn.execute("ALTER TABLE t RENAME COLUMN note TO remark")
    conn.execute("UPDATE t SET remark = 'renamed' WHERE id = 2")
    msgs = drain(conn, decoder)
    rels = [m for m in of(msgs, Relation) if m.name == "t"]
    assert [r.column_names for r in rels] == [
        ("id", "m", "p", "big", "n", "note"),
        ("id", "m", "p", "big", "note", "extra"),
        ("id", "m", "p", "big", "remark", "extra"),
    ]
    first, second = (m for m in of(msgs, Insert) if m.relation.name == "t")
    assert dict(zip(first.relation.column_names, first.new, strict=True))["note"] == "before"
    assert dict(zip(second.relation.column_names, second.new, strict=True)) == {
        "id": "2", "m": None, "p": None, "big": None, "note": "after", "extra": "7"}
    (update,) = of(msgs, Update)
    assert update.relation.column_names[4] == "remark" and update.new[4] == "renamed"
    assert decoder.relations[rels[-1].oid] is rels[-1]


def test_malformed_payloads_are_refused() -> None:
    decoder = Decoder()
    with pytest.raises(ProtocolError, match="unknown pgoutput message"):
        decoder.decode(b"Z")
    with pytest.raises(ProtocolError, match="before its Relation"):
        decoder.decode(b"I\x00\x00\x00\x05N\x00\x00")
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
