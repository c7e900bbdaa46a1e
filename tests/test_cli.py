"""The user's story through the CLI: init, track, attribution, reading the journal, undo and its
refusals, and bad input. Every test runs the real command against a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import connect_as, rewind, rewind_json, table_state
from psycopg import sql

from journal.schema import SCHEMA_REVISION, head_revision
from rewind.devdb import Cluster

SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
                     total numeric(10,2));
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 10) g;
INSERT INTO orders SELECT 100 + g, 1 + g % 10, g * 1.5 FROM generate_series(1, 20) g;
"""


@pytest.fixture
def shop(dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]) -> str:
    conn.execute(SHOP)
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "--all")[0] == 0
    return dsn


def test_init_is_idempotent_and_versioned(dsn: str, capsys: pytest.CaptureFixture[str],
                                          conn: psycopg.Connection[Any]) -> None:
    code, first = rewind_json(capsys, "init", "--dsn", dsn)
    assert code == 0 and first["upgraded_from"] is None and first["revision"] == SCHEMA_REVISION
    code, second = rewind_json(capsys, "init", "--dsn", dsn)
    assert code == 0 and second["upgraded_from"] == SCHEMA_REVISION
    assert conn.execute("SELECT version_num FROM rewind.alembic_version").fetchone() == (SCHEMA_REVISION,)


def test_a_schema_at_another_revision_is_refused_until_upgraded(shop: str, conn: psycopg.Connection[Any],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert head_revision() == SCHEMA_REVISION  # the constant the commands check against is Alembic's head
    conn.execute("UPDATE rewind.alembic_version SET version_num = '0008'")
    code, out, err = rewind(capsys, "actions", "--dsn", shop)
    assert code == 2 and out == "" and "at revision 0008" in err and "rewind init" in err
    assert len(err.strip().splitlines()) == 1
    assert rewind(capsys, "init", "--dsn", shop)[0] == 0
    assert rewind(capsys, "actions", "--dsn", shop)[0] == 0


def test_upgrade_to_row_update_capture_reattaches_tracked_tables(shop: str, conn: psycopg.Connection[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A database tracked before revision 0003 has statement-level UPDATE capture on plain tables;
    the upgrade gives them the row trigger, and every UPDATE is journaled once either way."""
    def row_level() -> bool:
        row = conn.execute("SELECT (tgtype::int & 1) = 1 FROM pg_trigger "
                           "WHERE tgrelid = 'customers'::regclass AND tgname = 'rewind_capture_u'").fetchone()
        return bool(row and row[0])

    assert row_level()
    conn.execute("DROP TRIGGER rewind_capture_u ON customers")
    tbl = conn.execute("SELECT id FROM rewind.tracked WHERE table_name = 'customers'").fetchone()[0]  # type: ignore[index]
    conn.execute(sql.SQL("CREATE TRIGGER rewind_capture_u AFTER UPDATE ON customers REFERENCING OLD TABLE AS old_rows "
                         "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rewind.capture_update({})").format(
                             sql.Literal(str(tbl))))
    conn.execute("UPDATE rewind.alembic_version SET version_num = '0002'")
    code, result = rewind_json(capsys, "init", "--dsn", shop)
    assert code == 0 and result["upgraded_from"] == "0002" and result["revision"] == SCHEMA_REVISION
    assert row_level()
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = 'x' WHERE id <= 3")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-7")
    assert actions[0]["tables"]["public.customers"]["update"] == 3


# The UPDATE row trigger's function as revision 0009 had it: shared, the tracked id from TG_ARGV.
SHARED_ROW_CAPTURE = """
CREATE FUNCTION rewind.capture_update_row() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
    VALUES (rewind.journal_tx(), rewind.journal_pos(), TG_ARGV[0]::integer, 'U', to_jsonb(OLD), to_jsonb(NEW));
    RETURN NULL;
END $$"""


def test_each_plain_table_updates_through_a_function_of_its_own(shop: str, conn: psycopg.Connection[Any],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The UPDATE row trigger calls rewind.capture_update_row_<tracked id>(), with no trigger
    argument to read; the upgrade from 0009 moves tables off the shared function and drops it;
    stream mode, untrack and DROP TABLE take a table's function away with its trigger."""
    def row_triggers() -> dict[str, str]:
        return {r[0]: r[1] for r in conn.execute(
            "SELECT tgrelid::regclass::text, tgfoid::regprocedure::text FROM pg_trigger "
            "WHERE tgname = 'rewind_capture_u'")}

    def functions() -> set[str]:
        return {r[0] for r in conn.execute("SELECT oid::regprocedure::text FROM pg_proc WHERE "
                                           "pronamespace = 'rewind'::regnamespace AND proname ^@ 'capture_update_row'")}

    ids = {r[0]: r[1] for r in conn.execute("SELECT table_name, id FROM rewind.tracked")}
    own = {t: f"rewind.capture_update_row_{ids[t]}()" for t in ("customers", "orders")}
    assert row_triggers() == own and functions() == set(own.values())

    conn.execute(SHARED_ROW_CAPTURE)
    conn.execute("DROP TRIGGER rewind_capture_u ON customers")
    conn.execute(f"DROP FUNCTION {own['customers']}")
    shared = ("CREATE TRIGGER rewind_capture_u AFTER UPDATE ON {} FOR EACH ROW "
              "EXECUTE FUNCTION rewind.capture_update_row({})")
    conn.execute(sql.SQL(shared).format(sql.Identifier("customers"), sql.Literal(str(ids["customers"]))))
    # an untracked table that carries the customers' trigger (0009 gave one to inheritance children), disabled
    conn.execute("CREATE SCHEMA side; CREATE TABLE side.notes (id int PRIMARY KEY)")
    conn.execute(sql.SQL(shared).format(sql.Identifier("side", "notes"), sql.Literal(str(ids["customers"]))))
    conn.execute("ALTER TABLE side.notes DISABLE TRIGGER rewind_capture_u")
    conn.execute("UPDATE rewind.alembic_version SET version_num = '0009'")
    code, result = rewind_json(capsys, "init", "--dsn", shop)
    assert code == 0 and result["upgraded_from"] == "0009"
    assert row_triggers() == {**own, "side.notes": own["customers"]} and functions() == set(own.values())
    assert conn.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'rewind_capture_u' "
                        "AND tgrelid = 'side.notes'::regclass").fetchone() == ("D",)
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = 'x' WHERE id <= 3")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-7")
    assert actions[0]["tables"]["public.customers"]["update"] == 3

    # re-applying capture.sql (as a migration does) regenerates every table's function
    conn.execute(f"CREATE OR REPLACE FUNCTION {own['orders']} RETURNS trigger LANGUAGE plpgsql "
                 "AS $$ BEGIN RETURN NULL; END $$")
    conn.execute(files("journal").joinpath("sql", "capture.sql").read_text())
    body = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (own["orders"],)).fetchone()
    assert body is not None and "INSERT INTO rewind.change" in body[0]

    conn.execute("SELECT rewind.set_mode('orders', 'stream')")
    assert row_triggers() == {"customers": own["customers"], "side.notes": own["customers"]}
    assert functions() == {own["customers"]}
    conn.execute("SELECT rewind.set_mode('orders', 'journal')")
    assert functions() == set(own.values())
    assert rewind(capsys, "untrack", "--dsn", shop, "public.orders")[0] == 0
    assert functions() == {own["customers"]}
    conn.execute("DROP TABLE customers CASCADE")  # side.notes still calls the function: it stays, the DROP goes on
    assert row_triggers() == {"side.notes": own["customers"]} and functions() == {own["customers"]}


def hostile_role(conn: psycopg.Connection[Any], dsn: str, cluster: Cluster, *grants: str) -> tuple[str, str]:
    """A fresh login role with `grants` ("{}" names the role), and the table public.pwned that
    spy_operators write to; returns the role and a DSN that connects as it."""
    role = f"hostile_{uuid.uuid4().hex[:8]}"
    conn.execute("CREATE TABLE pwned (who text); GRANT INSERT ON pwned TO PUBLIC")
    for grant in ("CREATE ROLE {} LOGIN PASSWORD 'pw'", *grants):
        conn.execute(sql.SQL(grant).format(sql.Identifier(role)))
    return role, dsn.replace(f"postgres:{cluster.password}@", f"{role}:pw@")


def spy_operators(schema: str, signatures: list[tuple[str, str, str]]) -> str:
    """SQL that creates an "=" operator in schema for each (left type, right type, type compared
    as): it records who ran it in public.pwned, then compares as pg_catalog's would."""
    text = ""
    for left, right, common in signatures:
        name = f"{schema}.eq_{left}_{right}"
        text += (f"CREATE FUNCTION {name}({left}, {right}) RETURNS boolean LANGUAGE sql AS "
                 "$$ INSERT INTO public.pwned VALUES (current_user) "
                 f"RETURNING $1::{common} OPERATOR(pg_catalog.=) $2::{common} $$; "
                 f"CREATE OPERATOR {schema}.= (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {name}); ")
    return text


def run_by_others(conn: psycopg.Connection[Any], role: str) -> list[tuple[Any, ...]]:
    """Who ran a spy operator, other than the role that made it."""
    return conn.execute("SELECT who FROM pwned WHERE who <> %s", (role,)).fetchall()


def test_ddl_time_functions_do_not_run_operators_from_the_callers_path(
        dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str], pg_cluster: Cluster) -> None:
    """rewind's event triggers run as its owner, a superuser. A role that puts an operator on its
    search_path which matches their oid = regclass comparisons better than pg_catalog's does must
    not get it run there."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "--all")[0] == 0
    role, role_dsn = hostile_role(conn, dsn, pg_cluster, "CREATE SCHEMA mal AUTHORIZATION {}",
                                  "GRANT CREATE ON SCHEMA public TO {}")
    with psycopg.connect(role_dsn, autocommit=True) as m:
        m.execute(spy_operators("mal", [("oid", "regclass", "oid")]))
        m.execute("SET search_path = mal, public; CREATE TABLE public.m (id int PRIMARY KEY); "
                  "ALTER TABLE public.m ADD COLUMN v int; DROP TABLE public.m")
    assert run_by_others(conn, role) == []


def test_an_agent_cannot_run_its_operators_as_rewinds_owner(
        dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str], pg_cluster: Cluster) -> None:
    """The capture functions run as rewind's owner on every write, with the writer's search_path.
    An agent with a schema of its own that puts it ahead of pg_catalog, with "=" operators for the
    types the capture compares (nullif's text = text among them), must not get them run there: on
    any capture path, journal or stream mode, row or statement trigger, TRUNCATE."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int); CREATE TABLE p (id int PRIMARY KEY, v int) "
                 "PARTITION BY RANGE (id); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100); "
                 "CREATE TABLE s (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 1); "
                 "INSERT INTO p VALUES (1, 1)")
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "public.t", "public.p", "public.s")[0] == 0
    conn.execute("SELECT rewind.set_mode('s', 'stream')")  # its context trigger; no slot needed to fire it
    role, role_dsn = hostile_role(conn, dsn, pg_cluster, "CREATE SCHEMA mal AUTHORIZATION {}",
                                  "GRANT ALL ON t, p, s TO {}")
    with psycopg.connect(role_dsn, autocommit=True) as a:
        a.execute(spy_operators("mal", [("text", "text", "text"), ("bigint", "integer", "bigint"),
                                        ("bigint", "bigint", "bigint"), ("oid", "regclass", "oid")]))
        a.execute("SET search_path = mal, pg_catalog, public; SET application_name = ''")
        for statement in ("UPDATE public.t SET v = 2", "INSERT INTO public.t VALUES (2, 2)",
                          "DELETE FROM public.t WHERE id = 2", "UPDATE public.p SET v = 2",
                          "INSERT INTO public.s VALUES (1, 1)", "TRUNCATE public.t", "TRUNCATE public.p"):
            a.execute(statement)
    assert conn.execute("SELECT count(*) FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl "
                        "WHERE k.table_name IN ('t', 'p')").fetchone() == (6,)  # all journaled
    assert run_by_others(conn, role) == []
    same = conn.execute("SELECT bool_and(rewind.nonempty(x) IS NOT DISTINCT FROM nullif(x, '')) FROM "
                        "unnest(ARRAY['', ' ', 'agent-7', E'a\\nb', E'\\n', 'ü', NULL]) x").fetchone()
    assert same == (True,)  # rewind.nonempty, nullif without an operator, is nullif(s, '')


def test_rewinds_own_sessions_do_not_run_operators_from_public(
        dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str], pg_cluster: Cluster) -> None:
    """The operator's commands (preview, undo, actions, show, history, status) look up operators in
    pg_catalog only: one a role put in public, matching a comparison of theirs better than
    pg_catalog's, does not run as the operator's role."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 1)")
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "public.t")[0] == 0
    role, role_dsn = hostile_role(conn, dsn, pg_cluster, "GRANT CREATE ON SCHEMA public TO {}", "GRANT ALL ON t TO {}")
    with psycopg.connect(role_dsn, autocommit=True, options="-c rewind.actor=agent-x") as a:
        a.execute(spy_operators("public", [("regclass", "regclass", "oid"), ("oid", "regclass", "oid"),
                                           ("regclass", "oid", "oid")]))
        a.execute("UPDATE t SET v = 2")
    code, plan = rewind_json(capsys, "preview", "--dsn", dsn, "--actor", "agent-x")
    assert code == 0
    for args in (["undo", "--actor", "agent-x", "--plan", plan["plan"], "--yes"], ["actions"], ["show", "1"],
                 ["history", "t", "--pk", "1"], ["status"]):
        assert rewind(capsys, *args[:1], "--dsn", dsn, *args[1:])[0] == 0, args
    assert conn.execute("SELECT v FROM t").fetchone() == (1,)
    assert run_by_others(conn, role) == []


def test_altering_a_tracked_parent_leaves_its_inheritance_children_alone(dsn: str, conn: psycopg.Connection[Any],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Only a partition records under its root; an inheritance child is a table of its own."""
    conn.execute("CREATE TABLE ev (id int PRIMARY KEY, v int); CREATE SCHEMA side; "
                 "CREATE TABLE side.ev_old () INHERITS (ev)")
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    assert rewind(capsys, "track", "--dsn", dsn, "public.ev")[0] == 0
    conn.execute("ALTER TABLE ev ADD COLUMN note text")
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'side.ev_old'::regclass").fetchone() == (0,)


def test_init_without_privileges_names_them(dsn: str, conn: psycopg.Connection[Any],
                                            capsys: pytest.CaptureFixture[str], pg_cluster: Cluster) -> None:
    conn.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pw'")
    conn.execute("REVOKE CREATE ON DATABASE " + conn.info.dbname + " FROM PUBLIC")
    weak = dsn.replace(f"postgres:{pg_cluster.password}@", "weak:weak-pw@")
    code, out, err = rewind(capsys, "init", "--dsn", weak)
    assert code == 2
    assert "lacks" in err and "CREATE on database" in err and "superuser" in err
    assert "weak-pw" not in err + out
    assert conn.execute("SELECT to_regnamespace('rewind')").fetchone() == (None,)


def test_track_all_follows_new_tables_and_status(shop: str, conn: psycopg.Connection[Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("CREATE TABLE later (id int PRIMARY KEY, v text)")
    code, status = rewind_json(capsys, "status", "--dsn", shop)
    assert code == 0
    assert {t["table"] for t in status["tables"]} == {"public.customers", "public.orders", "public.later"}
    with connect_as(shop, "agent-1") as agent:
        agent.execute("INSERT INTO later VALUES (1, 'x')")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-1")
    assert actions[0]["tables"] == {"public.later": {"insert": 1, "update": 0, "delete": 0, "truncate": 0}}
    code, status = rewind_json(capsys, "untrack", "--dsn", shop, "public.later")
    assert code == 0 and "public.later" not in {t["table"] for t in status}
    code, status = rewind_json(capsys, "status", "--dsn", shop)
    assert "public.later" in status["untracked"]


def test_attribution_setting_application_role_and_run(shop: str, conn: psycopg.Connection[Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("CREATE ROLE agent_role LOGIN PASSWORD 'pw'; GRANT ALL ON customers, orders TO agent_role")
    with connect_as(shop, "agent-7", run_id="run-42") as a:
        a.execute("UPDATE customers SET name = 'x' WHERE id = 1")
    with connect_as(shop, application="billing-bot") as a:
        a.execute("UPDATE customers SET name = 'y' WHERE id = 2")
    with connect_as(shop) as a, a.transaction():
        a.execute("SET LOCAL rewind.actor = 'agent-local'")
        a.execute("UPDATE customers SET name = 'z' WHERE id = 3")
    role_dsn = shop.replace(shop.split("//")[1].split("@")[0], "agent_role:pw")
    with psycopg.connect(role_dsn, autocommit=True, application_name="") as a:
        a.execute("UPDATE customers SET name = 'w' WHERE id = 4")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("SELECT count(*) FROM rewind.change")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--since", "1h")
    by_actor = {a["actor"]: a for a in actions}
    assert by_actor["agent-7"]["run"] == "run-42" and by_actor["agent-7"]["role"] == "postgres"
    assert by_actor["billing-bot"]["application"] == "billing-bot"
    assert "agent-local" in by_actor
    assert by_actor["agent_role"]["role"] == "agent_role"
    assert {"id", "xid", "actor", "role", "application", "run", "started_at", "committed_at", "changes",
            "tables"} <= set(by_actor["agent-7"])


def test_ddl_is_recorded_with_its_actor(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-ddl") as a:
        a.execute("ALTER TABLE orders ADD COLUMN note text")
        a.execute("DROP TABLE orders")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-ddl")
    ddl = [d for a in actions for d in a["ddl"]]
    assert any(d.startswith("ALTER TABLE") for d in ddl) and any(d.startswith("DROP TABLE") for d in ddl)
    code, out, _ = rewind(capsys, "actions", "--dsn", shop, "--actor", "agent-ddl")
    assert "DROP TABLE" in out


def test_show_and_history(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET email = 'new@example.com' WHERE id = 5")
    with connect_as(shop, "alice") as p:
        p.execute("UPDATE customers SET name = 'Five' WHERE id = 5")
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-7")
    code, shown = rewind_json(capsys, "show", "--dsn", shop, str(actions[0]["id"]))
    assert code == 0
    [change] = shown["changes"]
    assert change["op"] == "update" and change["key"] == {"id": 5}
    assert change["diff"] == {"email": ["c5@example.com", "new@example.com"]}
    code, hist = rewind_json(capsys, "history", "--dsn", shop, "customers", "--pk", "5")
    assert [(h["actor"], h["op"]) for h in hist] == [("agent-7", "update"), ("alice", "update")]
    code, out, _ = rewind(capsys, "show", "--dsn", shop, str(actions[0]["id"]))
    assert "new@example.com" in out


def test_undo_keeps_later_work_of_others(shop: str, conn: psycopg.Connection[Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    expected_orders = table_state(conn, "orders")
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM customers WHERE id <= 3")  # cascades to their orders
    with connect_as(shop, "alice") as p:
        p.execute("UPDATE customers SET name = 'kept' WHERE id = 9")
        p.execute("INSERT INTO customers VALUES (11, 'new', NULL)")
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-*", "--since", "1h")
    assert code == 0 and plan["conflicts"] == []
    assert plan["tables"]["public.customers"] == {"insert": 3, "update": 0, "delete": 0}
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-*", "--since", "1h",
                               "--plan", plan["plan"], "--yes")
    assert code == 0 and result["applied"] and result["rows"] == plan["rows"]
    assert table_state(conn, "orders") == expected_orders
    assert conn.execute("SELECT name FROM customers WHERE id = 9").fetchone() == ("kept",)
    assert conn.execute("SELECT count(*) FROM customers").fetchone() == (11,)
    # the undo is an action of its own, and undoing it brings the agent's state back
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "rewind:undo")
    assert actions[0]["id"] == result["action"]
    code, again = rewind_json(capsys, "undo", "--dsn", shop, "--action", str(result["action"]), "--yes")
    assert code == 0 and again["applied"]
    assert conn.execute("SELECT count(*) FROM customers WHERE id <= 3").fetchone() == (0,)


def test_conflicts_abort_skip_merge(shop: str, conn: psycopg.Connection[Any],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = 'agent', email = 'agent@x' WHERE id IN (1, 2)")
    with connect_as(shop, "alice") as p:
        p.execute("UPDATE customers SET email = 'alice@x' WHERE id = 1")
    before = table_state(conn, "customers")
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--yes")
    assert code == 1 and result["applied"] is False
    [conflict] = result["conflicts"]
    assert conflict["pk"] == {"id": 1} and conflict["changed_by"] == ["alice"]
    assert conflict["actual"]["email"] == "alice@x" and conflict["expected"]["email"] == "agent@x"
    assert table_state(conn, "customers") == before

    code, merged = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "merge")
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "merge",
                               "--plan", merged["plan"], "--yes")
    assert code == 0 and result["applied"]
    # row 1: the name the agent changed is reverted, the email alice changed later stays
    assert conn.execute("SELECT name, email FROM customers WHERE id = 1").fetchone() == ("customer 1", "alice@x")
    assert conn.execute("SELECT name, email FROM customers WHERE id = 2").fetchone() == (
        "customer 2", "c2@example.com")


def test_skip_undoes_the_rest(shop: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id IN (101, 102)")
    with connect_as(shop, "alice") as p:
        p.execute("INSERT INTO orders VALUES (101, 1, 9.99)")  # key reused by someone else
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip", "--yes")
    assert code == 0 and result["skipped"] == 1 and result["rows"] == 1
    assert conn.execute("SELECT total::text FROM orders WHERE id = 101").fetchone() == ("9.99",)
    assert conn.execute("SELECT count(*) FROM orders WHERE id = 102").fetchone() == (1,)


def test_undo_of_one_delete_statement_plans_its_exceptions(shop: str, conn: psycopg.Connection[Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """One DELETE statement is planned by its exceptions (the rows back again, the rows others
    wrote in between) and re-inserted from the journal; every way of looking at the plan and of
    applying it must agree with the row-by-row plan."""
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id BETWEEN 101 AND 108")
    with connect_as(shop, "alice") as p:
        p.execute("INSERT INTO orders VALUES (103, 1, 3.33)")  # back again, alice's
    with connect_as(shop, "bob") as p:
        p.execute("INSERT INTO orders VALUES (105, 2, 5.55)")
        p.execute("DELETE FROM orders WHERE id = 105")  # written in between, gone again
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7")
    assert code == 0 and plan["tables"]["public.orders"] == {"insert": 8, "update": 0, "delete": 0}
    assert {(c["pk"]["id"], tuple(c["changed_by"])) for c in plan["conflicts"]} == {(103, ("alice",)), (105, ("bob",))}
    assert plan["samples"] and all(s["op"] == "insert" and s["diff"] for s in plan["samples"])
    code, skip = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip")
    assert skip["tables"]["public.orders"]["insert"] == 6
    assert all(s["pk"]["id"] not in (103, 105) for s in skip["samples"])

    with connect_as(shop, "carol") as p:
        p.execute("INSERT INTO orders VALUES (107, 3, 7.77)")  # the database moved since the preview
    code, out, err = rewind(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip",
                            "--plan", skip["plan"], "--yes")
    assert code == 1 and "moved since the preview" in err

    code, skip = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip")
    code, script, _ = rewind(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip", "--sql")
    assert script.count("INSERT INTO") == 5
    with conn.transaction(force_rollback=True):
        conn.execute(script.replace("BEGIN;", "").replace("COMMIT;", ""))
        by_script = table_state(conn, "orders")
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--on-conflict", "skip",
                               "--plan", skip["plan"], "--yes")
    assert code == 0 and result["rows"] == 5 and result["skipped"] == 3
    assert table_state(conn, "orders") == by_script
    assert conn.execute("SELECT id, total::text FROM orders WHERE id IN (103, 105, 107) ORDER BY id").fetchall() == [
        (103, "3.33"), (107, "7.77")]
    code, shown = rewind_json(capsys, "show", "--dsn", shop, str(result["action"]))
    assert code == 0 and sorted(c["after"]["id"] for c in shown["changes"]) == [101, 102, 104, 106, 108]


def test_undo_of_batched_deletes_keeps_edits_made_before_each_batch(shop: str, conn: psycopg.Connection[Any],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Deletes in batches are planned by their exceptions too: an edit by someone else before the
    batch that removed the row is no conflict (the row comes back as they left it); a key removed
    twice, because someone put it back in between, is planned row by row and is a conflict."""
    with connect_as(shop, "agent-7") as a, connect_as(shop, "alice") as p:
        a.execute("DELETE FROM orders WHERE id BETWEEN 101 AND 104")
        p.execute("UPDATE orders SET total = 42 WHERE id = 106")
        a.execute("DELETE FROM orders WHERE id BETWEEN 105 AND 108")
        expected = table_state(conn, "orders")
        code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7")
        assert code == 0 and plan["conflicts"] == [] and plan["tables"]["public.orders"]["insert"] == 8
        code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--plan", plan["plan"], "--yes")
        assert code == 0 and result["rows"] == 8
        assert conn.execute("SELECT total::text FROM orders WHERE id = 106").fetchone() == ("42.00",)
        assert len(table_state(conn, "orders")) == len(expected) + 8

    with connect_as(shop, "agent-8") as a, connect_as(shop, "bob") as b:
        a.execute("DELETE FROM orders WHERE id = 110")
        b.execute("INSERT INTO orders VALUES (110, 1, 1.10)")
        a.execute("DELETE FROM orders WHERE id IN (110, 111)")
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-8", "--on-conflict", "skip")
    assert [(c["pk"], c["changed_by"]) for c in plan["conflicts"]] == [({"id": 110}, ["bob"])]
    assert plan["tables"]["public.orders"] == {"insert": 1, "update": 0, "delete": 0}


def test_undo_never_reaches_rows_outside_the_selection(shop: str, conn: psycopg.Connection[Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("INSERT INTO customers VALUES (50, 'agent customer', NULL)")
    with connect_as(shop, "alice") as p:
        p.execute("INSERT INTO orders VALUES (500, 50, 12.00)")  # a person's order under it
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7")
    [conflict] = plan["conflicts"]
    assert conflict["pk"] == {"id": 50} and "dependent" in conflict["reason"] and "alice" in conflict["changed_by"]
    assert "public.orders" in conflict["reason"]
    code, _ = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--yes")
    assert code == 1
    assert conn.execute("SELECT count(*) FROM orders WHERE id = 500").fetchone() == (1,)


def test_undo_rolls_back_when_its_changes_differ_from_the_plan(shop: str, conn: psycopg.Connection[Any],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # An untracked child table with a cascade: the dependents check sees it and refuses.
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, customer_id int REFERENCES customers ON DELETE CASCADE)")
    rewind(capsys, "untrack", "--dsn", shop, "public.notes")
    with connect_as(shop, "agent-7") as a:
        a.execute("INSERT INTO customers VALUES (60, 'agent customer', NULL)")
    conn.execute("INSERT INTO notes VALUES (1, 60)")
    code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--yes")
    assert code == 1 and result["conflicts"][0]["changed_by"] == ["(untracked table public.notes)"]
    assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def test_stale_plan_and_max_rows_and_confirmation(shop: str, conn: psycopg.Connection[Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id BETWEEN 101 AND 105")
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7")
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id = 106")  # the database moved
    before = table_state(conn, "orders")
    code, out, err = rewind(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--plan", plan["plan"], "--yes")
    assert code == 1 and "moved since the preview" in err
    code, out, err = rewind(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--max-rows", "3", "--yes")
    assert code == 1 and "--max-rows" in err
    code, out, err = rewind(capsys, "undo", "--dsn", shop, "--actor", "agent-7")
    assert code == 2 and "--yes" in err
    assert table_state(conn, "orders") == before


def test_preview_sql_is_the_exact_undo(shop: str, conn: psycopg.Connection[Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = table_state(conn, "customers"), table_state(conn, "orders")
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = upper(name) WHERE id < 4")
        a.execute("DELETE FROM customers WHERE id = 7")
        a.execute("INSERT INTO customers VALUES (77, 'added', NULL)")
    code, out, _ = rewind(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--sql")
    assert code == 0 and out.startswith("BEGIN;")
    conn.execute(out)  # a DBA runs the script by hand
    assert (table_state(conn, "customers"), table_state(conn, "orders")) == before


def test_restore_to_a_time(shop: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    before = table_state(conn, "customers")
    mark = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = 'a' WHERE id = 1")
    with connect_as(shop, "alice") as p:
        p.execute("DELETE FROM customers WHERE id = 2")
        p.execute("UPDATE orders SET total = 0")
    code, plan = rewind_json(capsys, "restore", "--dsn", shop, "--to", mark.isoformat(), "--table", "customers",
                             "--preview")
    assert code == 0 and set(plan["tables"]) == {"public.customers"}
    code, result = rewind_json(capsys, "restore", "--dsn", shop, "--to", mark.isoformat(), "--table", "customers",
                               "--plan", plan["plan"], "--yes")
    assert code == 0 and result["applied"]
    assert table_state(conn, "customers") == before
    assert conn.execute("SELECT sum(total) FROM orders").fetchone() == (0,)  # not restored: not asked


def test_without_commit_timestamps_a_commit_time_is_unknown(shop: str, conn: psycopg.Connection[Any],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The test cluster keeps no commit timestamps (PostgreSQL's default): rewind.commit_time says
    NULL instead of raising, and the actions list leaves committed_at empty for the sidecar."""
    with connect_as(shop, "agent-7") as a:
        a.execute("UPDATE customers SET name = 'a' WHERE id = 1")
    assert conn.execute("SELECT DISTINCT rewind.commit_time(xid) FROM rewind.tx").fetchall() == [(None,)]
    code, actions = rewind_json(capsys, "actions", "--dsn", shop)
    assert code == 0 and actions[0]["committed_at"] is None
    code, status = rewind_json(capsys, "status", "--dsn", shop)
    assert code == 0 and status["commit_timestamps"] is False


@pytest.fixture(scope="module")
def commit_ts_cluster() -> Iterator[Cluster]:
    with Cluster(settings={"track_commit_timestamp": "on"}) as cluster:
        yield cluster


def test_restore_to_a_time_undoes_a_transaction_that_committed_after_it(
        commit_ts_cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    """A transaction that wrote before T and committed after it had nothing visible at T, so
    restore --to T undoes it. Without the sidecar's commit stamps, the server's own commit
    timestamps (track_commit_timestamp = on) say when it committed."""
    dsn = commit_ts_cluster.create_database("straddling")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SHOP)
        assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
        assert rewind(capsys, "track", "--dsn", dsn, "--all")[0] == 0
        before = table_state(conn, "customers")
        with connect_as(dsn, "agent-7") as a, a.transaction():
            a.execute("UPDATE customers SET name = 'late' WHERE id = 1")
            mark = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        code, actions = rewind_json(capsys, "actions", "--dsn", dsn, "--actor", "agent-7")
        assert code == 0 and datetime.fromisoformat(actions[0]["committed_at"]) > mark
        code, status = rewind_json(capsys, "status", "--dsn", dsn)
        assert code == 0 and status["commit_timestamps"] is True
        assert "the server keeps them" in rewind(capsys, "status", "--dsn", dsn)[1]
        code, plan = rewind_json(capsys, "restore", "--dsn", dsn, "--to", mark.isoformat(), "--preview")
        assert code == 0 and plan["tables"] == {"public.customers": {"insert": 0, "update": 1, "delete": 0}}
        code, result = rewind_json(capsys, "restore", "--dsn", dsn, "--to", mark.isoformat(),
                                   "--plan", plan["plan"], "--yes")
        assert code == 0 and result["applied"]
        assert table_state(conn, "customers") == before


@pytest.mark.parametrize("args, message", [
    (["undo", "--table", "nope", "--actor", "a", "--yes"], "unknown table"),
    (["undo", "--actor", "a", "--since", "yesterday-ish", "--yes"], "malformed time"),
    (["undo", "--table", "customers", "--yes"], "empty selection"),
    (["undo", "--actor", "nobody", "--yes"], "empty selection"),
    (["show", "999999"], "unknown action id"),
    (["undo", "--action", "999999", "--yes"], "unknown action id"),
    (["history", "customers", "--pk", "{bad json"], "malformed --pk"),
    (["history", "customers", "--pk", '{"id": 3, "x": 1}'], "this table's key is (id)"),
    (["track", "public.nope"], "unknown table"),
    (["actions", "--since", "99999999d"], "malformed time"),  # before the calendar: not a traceback
    (["show", "99999999999999999999"], "not in the range"),  # beyond bigint
    (["actions", "--limit", "-1"], "--limit"),
    (["undo", "--actor", "a", "--plan", "garbage", "--yes"], "malformed plan fingerprint"),  # a typo, not stale
    (["undo", "--actor", "a", "--max-rows", "-5", "--yes"], "--max-rows"),
    (["preview", "--actor", "a", "--on-conflict", "bogus"], "--on-conflict"),  # usage errors: one line too
    (["stream", "--heartbeat-seconds", "-1"], "--heartbeat-seconds"),
    (["stream", "--max-lag-bytes", "-1"], "--max-lag-bytes"),
    (["status", "--slot", "no_such_slot", "--check"], "no replication slot no_such_slot"),  # not a pass
])
def test_bad_input_exits_2_and_changes_nothing(shop: str, conn: psycopg.Connection[Any],
                                               capsys: pytest.CaptureFixture[str], args: list[str],
                                               message: str) -> None:
    with connect_as(shop, "a") as a:
        a.execute("DELETE FROM orders WHERE id = 101")
    before = table_state(conn, "orders"), conn.execute("SELECT count(*) FROM rewind.change").fetchone()
    code, out, err = rewind(capsys, *args[:1], "--dsn", shop, *args[1:])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert (table_state(conn, "orders"), conn.execute("SELECT count(*) FROM rewind.change").fetchone()) == before


def test_unreachable_or_wrong_dsn_masks_the_password(pg_cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    wrong_pw = pg_cluster.dsn("postgres", password="s3cret-pw")
    code, out, err = rewind(capsys, "actions", "--dsn", wrong_pw)
    assert code == 2 and "s3cret-pw" not in err + out and "***" in err
    unreachable = "postgresql://u:s3cret-pw@127.0.0.1:1/db"
    code, out, err = rewind(capsys, "status", "--dsn", unreachable)
    assert code == 2 and "s3cret-pw" not in err + out and len(err.strip().splitlines()) == 1
    code, out, err = rewind(capsys, "status", "--dsn", pg_cluster.dsn("no_such_db"))
    assert code == 2 and pg_cluster.password not in err
    spaced = "postgresql://u:s3cret PW@127.0.0.1:1/db"  # unparsable: libpq quotes the password back
    code, out, err = rewind(capsys, "status", "--dsn", spaced)
    assert code == 2 and "s3cret" not in err + out and len(err.strip().splitlines()) == 1, err


def test_track_all_takes_an_inheritance_parent_and_its_children(dsn: str, conn: psycopg.Connection[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("CREATE TABLE ev (id int PRIMARY KEY, v int); CREATE TABLE ev_2024 (PRIMARY KEY (id)) INHERITS (ev);"
                 "CREATE TABLE ev_2025 (PRIMARY KEY (id)) INHERITS (ev)")
    assert rewind(capsys, "init", "--dsn", dsn)[0] == 0
    code, out, err = rewind(capsys, "track", "--dsn", dsn, "--all")
    assert code == 0, err  # adding the parent to the publication had added its children already
    published = {r[0] for r in conn.execute("SELECT tablename FROM pg_publication_tables "
                                             "WHERE pubname = 'rewind_tables'")}
    assert published == {"ev", "ev_2024", "ev_2025"}


def test_table_names_fold_as_postgresql_folds_them(shop: str, conn: psycopg.Connection[Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id = 101")
    code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7", "--table", "PUBLIC.Orders")
    assert code == 0 and list(plan["tables"]) == ["public.orders"]  # unquoted: folded to lower case
    conn.execute('CREATE TABLE "Ledger" (id int PRIMARY KEY)')
    code, out, err = rewind(capsys, "track", "--dsn", shop, "public.Ledger")  # as Rewind prints it: found as typed
    assert code == 0, err
    code, out, err = rewind(capsys, "history", "--dsn", shop, '"Ledger"', "--pk", "1")
    assert code == 0, err


def test_init_with_a_bad_slot_name_installs_nothing(dsn: str, conn: psycopg.Connection[Any],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = rewind(capsys, "init", "--dsn", dsn, "--slot-name", "Bad Slot!")
    assert code == 2 and "bad slot name" in err
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'rewind'").fetchone() == (0,)


def test_a_reader_of_a_missing_mirror_creates_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "jounral.sqlite"
    for args in (["actions"], ["show", "1"], ["history", "public.t", "--pk", "1"]):
        code, out, err = rewind(capsys, *args, "--journal", f"sqlite:///{typo}")
        assert code == 2 and "no rewind journal mirror" in err, (args, err)
    assert list(tmp_path.iterdir()) == []


def test_order_follows_time_across_long_lived_connections(shop: str, conn: psycopg.Connection[Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: change ids once came from per-session sequence caches, so a person's earlier
    edit on one open connection could sort after the agent's later delete on another."""
    orders_before = table_state(conn, "orders")
    with connect_as(shop, "agent-7") as agent, connect_as(shop, "alice") as alice:
        agent.execute("UPDATE customers SET name = 'agent' WHERE id = 1")
        alice.execute("UPDATE customers SET name = 'alice' WHERE id = 2")
        agent.execute("DELETE FROM customers WHERE id = 2")
        code, plan = rewind_json(capsys, "preview", "--dsn", shop, "--actor", "agent-7")
        assert code == 0 and plan["conflicts"] == []
        code, result = rewind_json(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--yes")
    assert code == 0 and result["applied"]
    assert conn.execute("SELECT id, name FROM customers WHERE id IN (1, 2) ORDER BY id").fetchall() == [
        (1, "customer 1"), (2, "alice")]
    assert table_state(conn, "orders") == orders_before  # the cascaded orders are back


@pytest.mark.parametrize("rule, message", [
    ("CREATE RULE keep AS ON INSERT TO orders DO INSTEAD NOTHING", "touched other rows than planned"),
    ("CREATE RULE echo AS ON INSERT TO orders DO ALSO INSERT INTO audit VALUES (NEW.id)", "outside its plan"),
])
def test_undo_proves_it_did_exactly_the_plan(shop: str, conn: psycopg.Connection[Any],
                                             capsys: pytest.CaptureFixture[str], rule: str, message: str) -> None:
    """Rules rewrite statements behind the undo's back: it must notice, refuse and roll back."""
    conn.execute("CREATE TABLE audit (order_id int)")
    rewind(capsys, "track", "--dsn", shop, "audit")
    with connect_as(shop, "agent-7") as a:
        a.execute("DELETE FROM orders WHERE id IN (101, 102)")
    conn.execute(rule)
    before = table_state(conn, "orders"), table_state(conn, "audit")
    code, out, err = rewind(capsys, "undo", "--dsn", shop, "--actor", "agent-7", "--yes")
    assert code == 1 and message in err
    assert (table_state(conn, "orders"), table_state(conn, "audit")) == before


def test_one_transaction_record_per_transaction_across_savepoints(shop: str, conn: psycopg.Connection[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The record's id lives in a transaction-local setting: a rolled-back savepoint takes the record and
    the setting together, the next change writes a record again, and the session's next transaction
    starts without one (its changes get a record of their own, not the previous transaction's)."""
    with connect_as(shop, "agent-sp") as a:
        with a.transaction():
            a.execute("SAVEPOINT s")
            a.execute("UPDATE customers SET name = 'gone' WHERE id = 1")
            a.execute("ROLLBACK TO SAVEPOINT s")
            a.execute("UPDATE customers SET name = 'kept' WHERE id = 2")
            a.execute("DO $$ BEGIN UPDATE customers SET name = 'also gone' WHERE id = 3; "
                      "RAISE EXCEPTION 'undone'; EXCEPTION WHEN raise_exception THEN NULL; END $$")
            a.execute("UPDATE orders SET total = 0 WHERE id = 101")
        with a.transaction():
            a.execute("UPDATE customers SET name = 'next' WHERE id = 4")
        a.execute("UPDATE customers SET name = 'autocommit' WHERE id = 5")
    rows = conn.execute("SELECT t.id, t.xid::text, count(c.*) FROM rewind.tx t JOIN rewind.change c ON c.tx = t.id "
                        "WHERE t.actor = 'agent-sp' GROUP BY t.id ORDER BY t.id").fetchall()
    assert [r[2] for r in rows] == [2, 1, 1]
    assert len({r[1] for r in rows}) == 3
    assert conn.execute("SELECT count(*) FROM rewind.tx t WHERE t.actor = 'agent-sp' "
                        "AND NOT EXISTS (SELECT FROM rewind.change c WHERE c.tx = t.id)").fetchone() == (0,)
    code, actions = rewind_json(capsys, "actions", "--dsn", shop, "--actor", "agent-sp")
    assert code == 0 and sorted(a["changes"] for a in actions) == [1, 1, 2]
