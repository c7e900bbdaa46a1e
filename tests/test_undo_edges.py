"""Undo at its edges: merge against a row someone deleted, the plan fingerprint's scope, triggers
defined on a partition, and the `--sql` script on partitions and on array rows. Each is a case a
review found undone or wrong; each runs the real CLI against a real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from helpers import connect_as, rewind, rewind_json, table_state


def tracked(conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str], ddl: str) -> None:
    conn.execute(ddl)
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "--all")[0] == 0


def test_merge_skips_a_row_deleted_since_and_reverts_the_rest(dsn: str, conn: psycopg.Connection[Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    tracked(conn, dsn, capsys, "CREATE TABLE c (id int PRIMARY KEY, name text);"
                               "INSERT INTO c SELECT g, 'n' || g FROM generate_series(1, 3) g")
    with connect_as(dsn, "agent-7") as a:
        a.execute("UPDATE c SET name = 'agent' WHERE id IN (1, 2)")
    with connect_as(dsn, "alice") as p:
        p.execute("DELETE FROM c WHERE id = 1")
    code, plan = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--on-conflict", "merge")
    assert code == 0 and plan["tables"]["public.c"]["update"] == 1
    assert [(c["pk"], c["resolution"]) for c in plan["conflicts"]] == [({"id": 1}, "skipped")]
    code, result = rewind_json(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--on-conflict", "merge",
                               "--plan", plan["plan"], "--yes")
    assert code == 0 and result["rows"] == 1 and result["skipped"] == 1
    assert conn.execute("SELECT id, name FROM c ORDER BY id").fetchall() == [(2, "n2"), (3, "n3")]


def test_the_fingerprint_names_the_tables_it_covers(dsn: str, conn: psycopg.Connection[Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    tracked(conn, dsn, capsys, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);"
                               "INSERT INTO a SELECT generate_series(1, 3); INSERT INTO b SELECT generate_series(1, 3)")
    with connect_as(dsn, "agent-7") as x, x.transaction():
        x.execute("DELETE FROM a")
        x.execute("DELETE FROM b")
    _, on_a = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--table", "a")
    _, on_b = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--table", "b")
    assert on_a["plan"] != on_b["plan"]
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--table", "b",
                            "--plan", on_a["plan"], "--yes")
    assert code == 1 and "moved since the preview" in err
    assert conn.execute("SELECT count(*) FROM b").fetchone() == (0,)


def test_a_trigger_on_a_partition_sleeps_during_the_undo(dsn: str, conn: psycopg.Connection[Any],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    tracked(conn, dsn, capsys, """
        CREATE TABLE m (id int, region text, v int, touched int DEFAULT 0, PRIMARY KEY (id, region))
            PARTITION BY LIST (region);
        CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
        CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
        CREATE TRIGGER bump BEFORE UPDATE ON m_eu FOR EACH ROW EXECUTE FUNCTION bump();
        INSERT INTO m VALUES (1, 'eu', 1);
    """)
    before = table_state(conn, "m")
    with connect_as(dsn, "agent-7") as a:
        a.execute("UPDATE m SET v = 2 WHERE id = 1")
    code, result = rewind_json(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--yes")
    assert code == 0
    assert table_state(conn, "m") == before  # touched back to 0: the trigger did not fire again
    journaled = conn.execute("SELECT after FROM rewind.change WHERE tx = %s", (result["action"],)).fetchone()
    assert journaled is not None and journaled[0]["touched"] == 0  # and the undo's journal says so
    assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'bump'").fetchone() == ("O",)


@pytest.mark.parametrize("ddl, agent", [
    # ctid is per partition: a person's row in another partition shares the agent's row's ctid
    ("CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
     "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu'); CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');"
     "INSERT INTO m VALUES (1, 'eu', 1)", "INSERT INTO m VALUES (2, 'us', 2)"),
    # an array contains a shorter one: only equal images are the same row
    ("CREATE TABLE m (name text, t text[]); INSERT INTO m VALUES ('a', '{x,y}')", "INSERT INTO m VALUES ('a', '{x}')"),
    ("CREATE TABLE m (k text[] PRIMARY KEY, v int); INSERT INTO m VALUES ('{x,y}', 5), ('{x}', 1)",
     "UPDATE m SET v = 3 WHERE k = '{x}'"),
])
def test_the_sql_script_touches_only_the_planned_rows(dsn: str, conn: psycopg.Connection[Any],
                                                      capsys: pytest.CaptureFixture[str], ddl: str, agent: str) -> None:
    tracked(conn, dsn, capsys, ddl)
    before = table_state(conn, "m")
    with connect_as(dsn, "agent-7") as a:
        a.execute(agent)
    code, script, _ = rewind(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--sql")
    assert code == 0
    conn.execute(script)
    assert table_state(conn, "m") == before


@pytest.mark.parametrize("policy", ["skip", "merge"])
@pytest.mark.parametrize("ddl, agent, person", [
    ("CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m VALUES (1, 'n'), (5, 'other')",
     "UPDATE m SET id = 2 WHERE id = 1", "UPDATE m SET v = 'person' WHERE id = 2"),
    # without a key an UPDATE is a delete of the old row and an insert of the new: one identity change
    ("CREATE TABLE m (who text, v int); INSERT INTO m VALUES ('x', 1), ('y', 2)",
     "UPDATE m SET v = 10 WHERE who = 'x'", "UPDATE m SET v = 11 WHERE who = 'x'"),
])
def test_a_key_change_is_undone_whole_or_not_at_all(dsn: str, conn: psycopg.Connection[Any],
                                                    capsys: pytest.CaptureFixture[str], policy: str, ddl: str,
                                                    agent: str, person: str) -> None:
    """Someone changed the row after the agent moved it: skipping the delete of the moved row
    while re-inserting the old one would leave one row twice."""
    tracked(conn, dsn, capsys, ddl)
    with connect_as(dsn, "agent-7") as a:
        a.execute(agent)
    with connect_as(dsn, "alice") as p:
        p.execute(person)
    now = table_state(conn, "m")
    code, plan = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--on-conflict", policy)
    assert code == 0 and plan["tables"] in ({}, {"public.m": {"insert": 0, "update": 0, "delete": 0}})
    assert {c["resolution"] for c in plan["conflicts"]} == {"skipped"} and len(plan["conflicts"]) == 2
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--on-conflict", policy, "--yes")
    assert code == 0, err
    assert table_state(conn, "m") == now  # nothing half-undone


def test_undoing_twice_without_a_key_duplicates_nothing(dsn: str, conn: psycopg.Connection[Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    tracked(conn, dsn, capsys, "CREATE TABLE log (who text, v int); INSERT INTO log VALUES ('x', 1), ('y', 2)")
    with connect_as(dsn, "agent-7") as a:
        a.execute("DELETE FROM log WHERE who = 'x'")
    before = table_state(conn, "log")
    _, first = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7")
    code, result = rewind_json(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--plan", first["plan"], "--yes")
    assert code == 0 and result["rows"] == 1
    after = table_state(conn, "log")
    assert after != before and len(after) == 2
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--plan", first["plan"], "--yes")
    assert code == 1 and "moved since the preview" in err  # the first undo moved it
    code, plan = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7")
    assert code == 0 and [c["changed_by"] for c in plan["conflicts"]] == [["rewind:undo"]]
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--yes")
    assert code == 1 and "conflict" in err
    assert table_state(conn, "log") == after


FK_SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers {action}, total int);
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 5) g;
INSERT INTO orders SELECT 100 + g, g, g FROM generate_series(1, 5) g;
"""


@pytest.mark.parametrize("action, agent", [
    # the delete set the order's reference to NULL: the customer comes back before the order points at it
    ("ON DELETE SET NULL", ["DELETE FROM customers WHERE id = 5"]),
    # the order moved to another customer, then its customer went
    ("", ["UPDATE orders SET customer_id = 1 WHERE customer_id = 5", "DELETE FROM customers WHERE id = 5"]),
    # a new customer, and an order moved to it: the order moves back before the customer goes
    ("", ["INSERT INTO customers VALUES (99, 'new')", "UPDATE orders SET customer_id = 99 WHERE id = 101"]),
    # a key change that cascaded into the orders
    ("ON UPDATE CASCADE ON DELETE CASCADE", ["UPDATE customers SET id = 50 WHERE id = 5"]),
])
def test_undo_orders_its_statements_by_foreign_keys(dsn: str, conn: psycopg.Connection[Any],
                                                    capsys: pytest.CaptureFixture[str], action: str,
                                                    agent: list[str]) -> None:
    tracked(conn, dsn, capsys, FK_SHOP.format(action=action))
    before = table_state(conn, "customers"), table_state(conn, "orders")
    with connect_as(dsn, "agent-7") as a, a.transaction():
        for statement in agent:
            a.execute(statement)
    code, plan = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-7")
    assert code == 0 and plan["conflicts"] == []  # the agent's own rows are not someone else's dependents
    code, script, _ = rewind(capsys, "preview", "--dsn", dsn, "--actor", "agent-7", "--sql")
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--plan", plan["plan"], "--yes")
    assert code == 0, err
    assert (table_state(conn, "customers"), table_state(conn, "orders")) == before
    undo_action = json.loads(rewind(capsys, "actions", "--dsn", dsn, "--actor", "rewind:undo", "--json")[1])[0]["id"]
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--action", str(undo_action), "--yes")
    assert code == 0, err  # undoing the undo brings the agent's state back, in the same order
    conn.execute(script)  # and the printed script, run instead of the undo, does the same
    assert (table_state(conn, "customers"), table_state(conn, "orders")) == before


@pytest.mark.parametrize("agent", [
    # B's address went to A: A gives it back before B returns
    ["DELETE FROM users WHERE id = 2", "UPDATE users SET email = 'b@x' WHERE id = 1"],
    # a row replaced by a new one with the same address: the new one goes before the old returns
    ["DELETE FROM users WHERE id = 2", "INSERT INTO users VALUES (3, 'b@x')"],
])
def test_undo_orders_its_statements_by_unique_columns(dsn: str, conn: psycopg.Connection[Any],
                                                      capsys: pytest.CaptureFixture[str], agent: list[str]) -> None:
    tracked(conn, dsn, capsys, "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE);"
                               "INSERT INTO users VALUES (1, 'a@x'), (2, 'b@x')")
    before = table_state(conn, "users")
    with connect_as(dsn, "agent-7") as a, a.transaction():
        for statement in agent:
            a.execute(statement)
    code, out, err = rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--yes")
    assert code == 0, err
    assert table_state(conn, "users") == before


def test_a_row_added_under_the_undo_in_an_untracked_table_is_waited_for(dsn: str, conn: psycopg.Connection[Any],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A person adds a note under the agent's new customer while the undo starts: the undo waits
    for them, then sees the note and refuses, instead of planning without it and cascading it away
    (an untracked table: no capture to notice)."""
    tracked(conn, dsn, capsys, "CREATE TABLE customers (id int PRIMARY KEY, name text)")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, customer_id int REFERENCES customers ON DELETE CASCADE)")
    assert rewind(capsys, "untrack", "--dsn", dsn, "notes")[0] == 0  # (track --all took it on creation)
    with connect_as(dsn, "agent-7") as a:
        a.execute("INSERT INTO customers VALUES (1, 'new')")
    person = psycopg.connect(dsn)  # a transaction of its own, open while the undo starts
    person.execute("INSERT INTO notes VALUES (10, 1)")
    result: list[tuple[int, str, str]] = []
    undo = threading.Thread(target=lambda: result.append(
        rewind(capsys, "undo", "--dsn", dsn, "--actor", "agent-7", "--yes")))
    undo.start()
    wait_until_rewind_waits(conn)
    person.commit()
    person.close()
    undo.join(60)
    code, out, err = result[0]
    assert code == 1 and "1 conflict(s)" in err, err  # the note, found as a dependent of the customer
    assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def wait_until_rewind_waits(conn: psycopg.Connection[Any]) -> None:
    """Until a connection of rewind's waits for a lock (a table's, or a row's)."""
    deadline = time.monotonic() + 30
    while not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND application_name = 'rewind')").fetchone()[0]:  # type: ignore[index]
        assert time.monotonic() < deadline, "the undo never waited"
        time.sleep(0.05)
