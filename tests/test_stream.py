"""The decoding stream against a real server: the mirror says what the database says (SQLite and
PostgreSQL mirrors), commit stamps without a loop, kill -9 and PostgreSQL restarts lose and
duplicate nothing, idle databases release WAL, max_lag recreates the slot with a gap, and the
mirror outlives DROP DATABASE."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import connect_as, rewind, rewind_json
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from stream_helpers import (
    StreamProcess,
    db_scalar,
    mirror_checkpoint,
    mirror_rows,
    mirror_scalar,
    mirrored_changes,
    slot_lsns,
    streaming,
    wait_for,
)

import journal
from journal.stream import Streamer
from rewind.devdb import Cluster

SHOP = """
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Customers" (id int PRIMARY KEY, name text NOT NULL, score numeric);
CREATE TABLE orders (id int, line int, qty int, PRIMARY KEY (id, line));
CREATE TABLE notes (body text);
INSERT INTO "Sales Dept"."Customers" SELECT g, 'customer ' || g, g * 1.5 FROM generate_series(1, 20) g;
"""


@pytest.fixture
def shop(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute(SHOP)
    journal.init(dsn)
    journal.track(dsn, all_schemas=True)
    return dsn


def agent_work(dsn: str) -> None:
    with connect_as(dsn, "agent-7", run_id="run-1") as a:
        a.execute('UPDATE "Sales Dept"."Customers" SET name = name || \'!\' WHERE id <= 5')
        a.execute('DELETE FROM "Sales Dept"."Customers" WHERE id = 20')
        a.execute("INSERT INTO orders SELECT g, 1, g FROM generate_series(1, 50) g")
        a.execute("INSERT INTO notes VALUES ('no key here')")
    with connect_as(dsn, application="billing-bot") as b, b.transaction():
        b.execute("UPDATE orders SET qty = qty + 1 WHERE id <= 3")
        b.execute("ALTER TABLE orders ADD COLUMN note text")
        b.execute("INSERT INTO orders VALUES (99, 1, 1, 'with the new column')")
    with connect_as(dsn, "agent-8") as c:
        c.execute("TRUNCATE notes")


def mirror_agent_work(streamer: Streamer, dsn: str) -> int:
    """agent_work() while streamer runs; returns the number of changes, once all are mirrored."""
    agent_work(dsn)
    total = int(db_scalar(dsn, "SELECT count(*) FROM rewind.change"))
    wait_for(lambda: streamer.stats.changes_total == total, what="every change in the mirror")
    return total


def normalized(value: Any) -> Any:
    """Timestamps as instants: the database renders them in its session's zone, the mirror in UTC."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def all_stamped(dsn: str, after_id: int = 0) -> bool:
    """Every transaction journaled while the slot existed has its commit LSN and time."""
    return bool(db_scalar(dsn, "SELECT count(*) > 0 AND bool_and(commit_lsn IS NOT NULL AND committed_at IS NOT NULL) "
                               "FROM rewind.tx WHERE id > %s", (after_id,)))


def test_mirror_reads_like_the_database(shop: str, mirror_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with streaming(shop, mirror_url) as streamer:
        mirror_agent_work(streamer, shop)
        wait_for(lambda: all_stamped(shop), what="commit stamps")
        settled = streamer.stats
        time.sleep(1.0)  # several heartbeats: the stamping UPDATEs must not come back as changes
        assert streamer.stats.changes_total == settled.changes_total
        assert streamer.stats.transactions_total == settled.transactions_total
        assert streamer.stats.lag_bytes is not None and streamer.stats.last_commit_time is not None

    # commit order and commit times from WAL
    stamped = [(r[0], r[1]) for r in psycopg.connect(shop, autocommit=True).execute(
        "SELECT id, commit_lsn::text FROM rewind.tx ORDER BY commit_lsn")]
    assert [i for i, _ in stamped] == sorted(i for i, _ in stamped)
    mirrored_tx = mirror_scalar(mirror_url, "SELECT count(*) FROM rewind_tx")
    assert mirrored_tx == db_scalar(shop, "SELECT count(*) FROM rewind.tx")

    code, from_db = rewind_json(capsys, "actions", "--dsn", shop)
    code2, from_mirror = rewind_json(capsys, "actions", "--journal", mirror_url)
    assert code == code2 == 0 and normalized(from_mirror) == normalized(from_db)
    assert any(a["ddl"] == ["ALTER TABLE public.orders"] for a in from_mirror)
    for selection in (["--actor", "agent-*"], ["--actor", "AGENT-*"], ["--table", "public.notes"],
                      ["--run", "run-1"], ["--action", str(from_db[-1]["id"])]):
        _, db_sel = rewind_json(capsys, "actions", "--dsn", shop, *selection)
        _, mirror_sel = rewind_json(capsys, "actions", "--journal", mirror_url, *selection)
        assert normalized(mirror_sel) == normalized(db_sel), selection
    for action in from_db:
        _, db_show = rewind_json(capsys, "show", "--dsn", shop, str(action["id"]))
        _, mirror_show = rewind_json(capsys, "show", "--journal", mirror_url, str(action["id"]))
        assert normalized(mirror_show) == normalized(db_show)
    for table, pk in (("Sales Dept.Customers", "3"), ("public.orders", '{"id": 2, "line": 1}'),
                      ("public.notes", '{"body": "no key here"}')):
        _, db_hist = rewind_json(capsys, "history", "--dsn", shop, table, "--pk", pk)
        _, mirror_hist = rewind_json(capsys, "history", "--journal", mirror_url, table, "--pk", pk)
        assert mirror_hist and normalized(mirror_hist) == normalized(db_hist)
    code, _, err = rewind(capsys, "show", "--journal", mirror_url, "424242")
    assert code == 2 and "unknown action id" in err


def test_drop_database_leaves_the_mirror_readable(shop: str, sqlite_url: str, pg_cluster: Cluster,
                                                  conn: psycopg.Connection[Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    name = str(conninfo_to_dict(shop)["dbname"])
    with streaming(shop, sqlite_url) as streamer:
        mirror_agent_work(streamer, shop)
        with pytest.raises(psycopg.errors.ObjectInUse, match="active logical replication slot"):
            pg_cluster.drop_database(name)  # even WITH (FORCE): the running stream holds the database
    _, before = rewind_json(capsys, "actions", "--dsn", shop, "--json")
    conn.close()
    pg_cluster.drop_database(name)  # drops the (now inactive) slot too
    code, after = rewind_json(capsys, "actions", "--journal", sqlite_url)
    assert code == 0 and normalized(after) == normalized(before)
    code, shown = rewind_json(capsys, "show", "--journal", sqlite_url, str(after[-1]["id"]))
    assert code == 0 and shown["changes"]
    code, out, _ = rewind(capsys, "actions", "--journal", sqlite_url, "--actor", "agent-7")
    assert code == 0 and "agent-7" in out and "Sales Dept.Customers" in out


def test_kill_9_during_a_200k_change_stream_then_restart(shop: str, sqlite_url: str, tmp_path: Path) -> None:
    total = 200_000
    proc = StreamProcess(shop, sqlite_url, tmp_path / "stream.log")  # a first start: slot and empty mirror
    wait_for(lambda: mirror_checkpoint(sqlite_url), what="the first start")
    proc.kill()
    with psycopg.connect(shop, autocommit=True) as w:  # then a backlog waits in the slot
        w.execute("CREATE TABLE bulk (id int PRIMARY KEY, v text)")
        journal.track(shop, ["public.bulk"])
        for start in range(0, total, 1000):  # 200 transactions
            w.execute("INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(%s::int, %s::int) g",
                      (start + 1, start + 1000))
    journaled = db_scalar(shop, "SELECT count(*) FROM rewind.change")
    assert journaled == total
    proc = StreamProcess(shop, sqlite_url, tmp_path / "stream.log")
    at_kill = wait_for(lambda: mirrored_changes(sqlite_url) >= 1000 and mirrored_changes(sqlite_url),
                       what="the first batches")
    proc.kill()
    seen = mirrored_changes(sqlite_url)
    assert seen < total, "the stream finished before the kill: nothing was tested"
    # a second life, killed as well, then a third that finishes
    proc = StreamProcess(shop, sqlite_url, tmp_path / "stream.log")
    wait_for(lambda: mirrored_changes(sqlite_url) > seen, what="progress after restart")
    proc.kill()
    proc = StreamProcess(shop, sqlite_url, tmp_path / "stream.log")
    wait_for(lambda: mirrored_changes(sqlite_url) == total, timeout=120, what="all 200,000 changes")
    assert proc.terminate() == 0, (tmp_path / "stream.log").read_text()[-2000:]

    assert at_kill >= 1000
    counts = mirror_rows(sqlite_url, "SELECT count(*), count(DISTINCT id), count(DISTINCT commit_lsn || ':' || seq), "
                                     "min(id), max(id) FROM rewind_change")[0]
    db_ids = db_scalar(shop, "SELECT ARRAY[count(*), count(DISTINCT id), min(id), max(id)] FROM rewind.change")
    assert tuple(counts) == (total, total, total, db_ids[2], db_ids[3])
    tx_count = db_scalar(shop, "SELECT count(*) FROM rewind.tx")
    assert mirror_scalar(sqlite_url, "SELECT count(*) FROM rewind_tx") == tx_count
    # the clean stop confirmed what the mirror holds
    checkpoint = mirror_scalar(sqlite_url, "SELECT confirmed_lsn FROM rewind_checkpoint")
    lsns = slot_lsns(shop)
    assert lsns is not None and lsns[0] >= checkpoint
    assert all_stamped(shop)


def test_postgres_restart_during_streaming_loses_nothing(shop: str, pg_mirror_url: str, pg_cluster: Cluster) -> None:
    rounds, rows = 40, 250
    with psycopg.connect(shop, autocommit=True) as w:
        w.execute("CREATE TABLE bulk (id int PRIMARY KEY, v text)")
    journal.track(shop, ["public.bulk"])
    base = db_scalar(shop, "SELECT count(*) FROM rewind.change")
    before_slot = db_scalar(shop, "SELECT coalesce(max(id), 0) FROM rewind.tx")  # CREATE TABLE's DDL action

    def write(first_round: int, last_round: int) -> None:
        with psycopg.connect(shop, autocommit=True) as w:
            for r in range(first_round, last_round):
                w.execute("INSERT INTO bulk SELECT g, 'v' FROM generate_series(%s::int, %s::int) g",
                          (r * rows + 1, (r + 1) * rows))

    with streaming(shop, pg_mirror_url) as streamer:
        write(0, rounds // 2)
        wait_for(lambda: streamer.stats.changes_total > 0, what="streaming")
        pg_cluster.restart()  # the mirror lives in the same cluster: it goes down too
        write(rounds // 2, rounds)
        wait_for(lambda: mirrored_changes(pg_mirror_url) == base + rounds * rows, timeout=60, what="every change")
        wait_for(lambda: all_stamped(shop, before_slot), what="commit stamps")  # stamped just after the mirror commit
    got = mirror_rows(pg_mirror_url, "SELECT count(*), count(DISTINCT id) FROM rewind_change")[0]
    assert tuple(got) == (base + rounds * rows,) * 2


def test_idle_database_does_not_retain_wal(shop: str, pg_cluster: Cluster, sqlite_url: str) -> None:
    other = f"busy_{uuid.uuid4().hex[:8]}"
    busy = pg_cluster.create_database(other)
    try:
        with streaming(shop, sqlite_url, heartbeat_seconds=0.2) as streamer:
            start = slot_lsns(shop)
            assert start is not None
            with psycopg.connect(busy, autocommit=True) as b:
                b.execute("CREATE TABLE t AS SELECT g, repeat('x', 100) AS v FROM generate_series(1, 50000) g")
                b.execute("CHECKPOINT")  # logs the running transactions, from which restart_lsn moves
                target = int(b.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()[0])  # type: ignore[index]
            assert target - start[0] > 4_000_000
            wait_for(lambda: (s := slot_lsns(shop)) and s[0] >= target, timeout=20,
                     what="confirmed_flush_lsn to pass the other database's writes")
            wait_for(lambda: (s := slot_lsns(shop)) and s[1] > start[1] + 4_000_000, timeout=20,
                     what="restart_lsn to move")
            # the lag the sidecar reports falls back too (a heartbeat message's own WAL is all that is left)
            wait_for(lambda: (lag := streamer.stats.lag_bytes) is not None and lag < 100_000, timeout=20,
                     what="lag_bytes to fall")
            assert streamer.stats.lag_seconds == 0.0
    finally:
        pg_cluster.drop_database(other)


def test_max_lag_recreates_the_slot_and_records_a_gap(shop: str, sqlite_url: str) -> None:
    with psycopg.connect(shop, autocommit=True) as w:
        w.execute("CREATE TABLE bulk (id int PRIMARY KEY, v text)")
    journal.track(shop, ["public.bulk"])
    with streaming(shop, sqlite_url, max_lag_bytes=2_000_000) as streamer:
        assert streamer.stats.gaps_total == 0
    before = slot_lsns(shop)
    assert before is not None
    with psycopg.connect(shop, autocommit=True) as w:  # while nobody streams: the slot falls behind
        w.execute("INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    lost = db_scalar(shop, "SELECT count(*) FROM rewind.change")
    with streaming(shop, sqlite_url, max_lag_bytes=2_000_000) as streamer:
        assert streamer.stats.gaps_total == 1
        with psycopg.connect(shop, autocommit=True) as w:
            w.execute("INSERT INTO bulk VALUES (-1, 'after the reset')")
        wait_for(lambda: streamer.stats.changes_total == 1, what="the stream after the reset")
    gaps = mirror_rows(sqlite_url, "SELECT kind, complete, start_lsn, end_lsn, start_time, end_time, detail "
                                   "FROM rewind_gap")
    assert len(gaps) == 1
    kind, complete, start_lsn, end_lsn, _, end_time, detail = gaps[0]
    assert kind == "slot_reset" and not complete and end_time and "max_lag_bytes" in detail
    assert start_lsn == before[0] and end_lsn > start_lsn + 2_000_000
    assert mirrored_changes(sqlite_url) == 1 and lost == 20000
    after = slot_lsns(shop)
    assert after is not None and after[0] > before[0]


def test_stream_cli_bad_input_and_init_slot(dsn: str, shop: str, capsys: pytest.CaptureFixture[str],
                                            pg_cluster: Cluster, tmp_path: Path) -> None:
    wrong = dsn.replace(pg_cluster.password, "wrong-secret")
    code, _, err = rewind(capsys, "stream", "--dsn", wrong, "--journal", f"sqlite:///{tmp_path}/j.sqlite")
    assert code == 2 and "wrong-secret" not in err and "***" in err
    code, _, err = rewind(capsys, "stream", "--dsn", shop, "--journal", "nonsense://x")
    assert code == 2 and "journal" in err
    code, _, err = rewind(capsys, "stream", "--dsn", shop, "--journal", "postgresql://u:pw-secret@127.0.0.1:1/x")
    assert code == 2 and "pw-secret" not in err
    code, _, err = rewind(capsys, "actions", "--journal", f"sqlite:///{tmp_path}/missing.sqlite")
    assert code == 2 and "no rewind journal mirror" in err
    code, _, err = rewind(capsys, "actions")
    assert code == 2 and "--journal" in err
    code, _, err = rewind(capsys, "stream", "--dsn", shop, "--slot", "Bad-Name")
    assert code == 2 and "slot name" in err

    code, out = rewind_json(capsys, "init", "--dsn", shop, "--slot")
    name = f"rewind_{conninfo_to_dict(shop)['dbname']}"
    assert code == 0 and out["slot"] == name
    assert db_scalar(shop, "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (name,)) == "pgoutput"
    db_scalar(shop, "SELECT pg_drop_replication_slot(%s)", (name,))


def test_tables_publication_follows_tracking(shop: str, conn: psycopg.Connection[Any]) -> None:
    def published() -> set[str]:
        return {r[0] for r in conn.execute("SELECT schemaname || '.' || tablename FROM pg_publication_tables "
                                           "WHERE pubname = 'rewind_tables'")}

    # notes has no key and default replica identity: publishing it would make its UPDATEs fail
    assert published() == {"Sales Dept.Customers", "public.orders"}
    conn.execute("ALTER TABLE notes REPLICA IDENTITY FULL")
    assert "public.notes" in published()
    journal.untrack(shop, ["public.orders"])
    assert "public.orders" not in published()
    conn.execute("CREATE TABLE later (id int PRIMARY KEY)")  # tracked by --all's event trigger
    assert "public.later" in published()
    conn.execute("ALTER TABLE later DROP CONSTRAINT later_pkey")
    assert "public.later" not in published()
    conn.execute("INSERT INTO later VALUES (1); UPDATE later SET id = 2; DELETE FROM later")


def test_a_replay_writes_nothing_twice_and_still_stamps(shop: str, sqlite_url: str,
                                                        conn: psycopg.Connection[Any]) -> None:
    """Deterministically what a crash between the mirror commit and the slot's confirmation
    leaves: a stream that brings every transaction again. Two slots created at the same point;
    the second replays all that the first mirrored."""
    for slot in ("first_slot", "second_slot"):
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    with streaming(shop, sqlite_url, slot="first_slot") as first:
        total = mirror_agent_work(first, shop)
        wait_for(lambda: all_stamped(shop), what="the first stream's stamps")
    snapshot = mirror_rows(sqlite_url, "SELECT commit_lsn, seq, id FROM rewind_change ORDER BY 1, 2")
    checkpoint = mirror_scalar(sqlite_url, "SELECT max(confirmed_lsn) FROM rewind_checkpoint")
    conn.execute("UPDATE rewind.tx SET commit_lsn = NULL, committed_at = NULL")  # as if the stamps never came
    with streaming(shop, sqlite_url, slot="second_slot") as second:
        wait_for(lambda: all_stamped(shop), what="the replay to stamp again")
        wait_for(lambda: db_scalar(shop, "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots "
                                         "WHERE slot_name = 'second_slot'") >= checkpoint, what="the replay's end")
        assert second.stats.changes_total == 0 and second.stats.transactions_total == 0
        assert second.stats.mirror_errors_total == 0
    assert mirror_rows(sqlite_url, "SELECT commit_lsn, seq, id FROM rewind_change ORDER BY 1, 2") == snapshot
    assert len(snapshot) == total
    with pytest.raises(journal.BadInput, match="mirrors database"):
        journal.mirror.MirrorStore(sqlite_url).checkpoint("some_other_database")


def test_a_failing_mirror_is_counted_and_retried_without_loss(shop: str, pg_mirror_url: str,
                                                               conn: psycopg.Connection[Any]) -> None:
    mirror_db = str(conninfo_to_dict(pg_mirror_url)["dbname"])
    with streaming(shop, pg_mirror_url) as streamer:
        first = mirror_agent_work(streamer, shop)
        # the mirror goes away: no new connections, the current ones cut
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(mirror_db)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (mirror_db,))
        with connect_as(shop, "agent-9") as a:
            a.execute("INSERT INTO orders SELECT g, 2, g FROM generate_series(1, 30) g")
        wait_for(lambda: streamer.stats.mirror_errors_total > 0, what="a mirror error")
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(mirror_db)))
        wait_for(lambda: mirrored_changes(pg_mirror_url) == first + 30, what="the changes written while it was away")
        wait_for(lambda: streamer.stats.ready, what="the stream to be ready again")
    assert mirror_scalar(pg_mirror_url, "SELECT count(DISTINCT id) FROM rewind_change") == first + 30


def test_a_new_mirror_starts_with_the_journal_as_it_stands(shop: str, mirror_url: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Journal rows written before any stream (or slot) existed are copied on the first start, in
    the slot's exported snapshot: nothing missing, nothing twice, and the stream goes on from there."""
    agent_work(shop)  # no slot yet
    before_slot = db_scalar(shop, "SELECT max(id) FROM rewind.tx")
    with streaming(shop, mirror_url) as streamer:
        assert mirror_scalar(mirror_url, "SELECT count(*) FROM rewind_change") == \
            db_scalar(shop, "SELECT count(*) FROM rewind.change")
        assert streamer.stats.changes_total == 0  # copied, not streamed
        with connect_as(shop, "agent-after") as a:
            a.execute("INSERT INTO orders SELECT g, 3, g FROM generate_series(1, 10) g")
        wait_for(lambda: streamer.stats.changes_total == 10 and all_stamped(shop, before_slot), what="the stream")
    code, from_db = rewind_json(capsys, "actions", "--dsn", shop)
    _, from_mirror = rewind_json(capsys, "actions", "--journal", mirror_url)
    assert code == 0 and normalized(from_mirror) == normalized(from_db)
    assert from_mirror[0]["actor"] == "agent-after" and from_mirror[0]["committed_at"] is not None
    assert from_mirror[-1]["committed_at"] is None  # copied, never stamped: its commit position is unknown
    for action in (from_db[0], from_db[-1]):
        _, db_show = rewind_json(capsys, "show", "--dsn", shop, str(action["id"]))
        _, mirror_show = rewind_json(capsys, "show", "--journal", mirror_url, str(action["id"]))
        assert normalized(mirror_show) == normalized(db_show)
