"""Property: undoing an agent leaves the database exactly as if only the others had worked.

Random interleavings of inserts, updates and deletes by an agent and by a person on disjoint rows
(of a keyed table and of a table without a key) run on one database; the person's writes alone run
on a second. After `undo --actor agent`, the two must be equal, row for row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import connect_as, database_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import journal
import restore
from rewind.devdb import Cluster

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, a int, b text, tags text[]);
CREATE TABLE log (who text, v int, note text);
INSERT INTO items SELECT g, g * 10, 'seed ' || g, ARRAY['t' || g] FROM generate_series(1, 20) g;
INSERT INTO log SELECT CASE WHEN g % 2 = 1 THEN 'agent' ELSE 'person' END, g, 'seed' FROM generate_series(1, 10) g;
INSERT INTO log VALUES ('agent', 99, 'dup'), ('agent', 99, 'dup'), ('person', 98, 'dup'), ('person', 98, 'dup');
"""
TABLES = ["public.items", "public.log"]
_names = itertools.count()

# Odd seeded ids belong to the agent, even ones to the person; new ids come from disjoint ranges.
Who = st.sampled_from(["agent", "person"])
Op = st.tuples(Who, st.sampled_from(["insert", "update", "delete", "log_insert", "log_delete", "log_update"]),
               st.integers(0, 30), st.integers(-1000, 1000),
               st.text(st.characters(blacklist_characters='\x00', blacklist_categories=('Cs',)), max_size=8))


@pytest.fixture(scope="module")
def template(pg_cluster: Cluster) -> Iterator[str]:
    name = f"prop_template_{next(_names)}"
    dsn = pg_cluster.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    journal.init(dsn)
    journal.track(dsn, all_schemas=True)
    yield name
    pg_cluster.drop_database(name)


def _apply(conn: psycopg.Connection[Any], who: str, kind: str, n: int, value: int, text: str,
           inserted: dict[str, list[int]]) -> None:
    mine = [i for i in range(1, 21) if (i % 2 == 1) == (who == "agent")] + inserted[who]
    if kind == "insert":
        new_id = (1000 if who == "agent" else 2000) + len(inserted[who])
        inserted[who].append(new_id)
        conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s)", (new_id, value, text, [text, None]))
    elif kind == "update":
        conn.execute("UPDATE items SET a = %s, b = b || %s WHERE id = %s", (value, text, mine[n % len(mine)]))
    elif kind == "delete":
        conn.execute("DELETE FROM items WHERE id = %s", (mine[n % len(mine)],))
    elif kind == "log_insert":
        conn.execute("INSERT INTO log VALUES (%s, %s, %s)", (who, value % 5, text))
    elif kind == "log_update":
        conn.execute("UPDATE log SET note = note || %s WHERE ctid = (SELECT min(ctid) FROM log WHERE who = %s "
                     "AND v = %s)", (text, who, value % 5))
    else:
        conn.execute("DELETE FROM log WHERE ctid = (SELECT min(ctid) FROM log WHERE who = %s AND v IN (%s, %s))",
                     (who, value % 5, 99 if who == "agent" else 98))


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(Op, min_size=1, max_size=25))
def test_undo_agent_equals_others_only(pg_cluster: Cluster, template: str,
                                       ops: list[tuple[str, str, int, int, str]]) -> None:
    both = pg_cluster.create_database(f"prop_both_{next(_names)}", template=template)
    others = pg_cluster.create_database(f"prop_others_{next(_names)}", template=template)
    try:
        inserted_both: dict[str, list[int]] = {"agent": [], "person": []}
        inserted_others: dict[str, list[int]] = {"agent": [], "person": []}
        with connect_as(both, "agent") as agent, connect_as(both, "person") as person, \
                connect_as(others, "person") as person_only:
            for who, kind, n, value, text in ops:
                _apply(agent if who == "agent" else person, who, kind, n, value, text, inserted_both)
                if who == "person":
                    _apply(person_only, who, kind, n, value, text, inserted_others)
        if journal.list_actions(both, journal.Selection(actors=["agent"])):
            result = restore.undo(both, journal.Selection(actors=["agent"]), max_rows=None)
            assert result.conflicts == []
        with psycopg.connect(both) as a, psycopg.connect(others) as b:
            assert database_state(a, TABLES) == database_state(b, TABLES)
    finally:
        for db in (both, others):
            name = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
            pg_cluster.drop_database(str(name))


def test_template_has_rewind(pg_cluster: Cluster, template: str) -> None:
    with psycopg.connect(pg_cluster.dsn(template)) as conn:
        tracked = conn.execute(sql.SQL("SELECT count(*) FROM rewind.tracked")).fetchone()
    assert tracked == (2,)
