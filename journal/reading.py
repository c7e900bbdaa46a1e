"""Reading the journal: what each action did, and one row's life."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from journal.connection import connect
from journal.errors import BadInput
from journal.schema import require_installed
from journal.selection import Selection
from journal.tracking import find_by_name, split_name

OPS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}


@dataclass
class Action:
    id: int
    xid: str
    actor: str
    role: str
    application: str | None
    run: str | None
    started_at: datetime
    committed_at: datetime | None
    changes: int = 0
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    ddl: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "xid": self.xid, "actor": self.actor, "role": self.role,
            "application": self.application, "run": self.run,
            "started_at": self.started_at.isoformat(),
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "changes": self.changes, "tables": self.tables, "ddl": self.ddl,
        }


@dataclass
class Change:
    id: int
    action: int
    table: str
    op: str
    key: dict[str, Any] | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime
    actor: str | None = None

    @property
    def diff(self) -> dict[str, list[Any]]:
        """Columns whose value differs: {column: [before, after]}."""
        before, after = self.before or {}, self.after or {}
        return {k: [before.get(k), after.get(k)] for k in dict.fromkeys([*before, *after])
                if before.get(k) != after.get(k)}

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "table": self.table, "op": OPS[self.op],
                "key": self.key, "before": self.before, "after": self.after,
                "diff": self.diff, "at": self.at.isoformat(), "actor": self.actor}


def row_key(key_columns: list[str], image: dict[str, Any] | None) -> dict[str, Any] | None:
    if image is None:
        return None
    if not key_columns:
        return image
    return {k: image.get(k) for k in key_columns}


_ACTIONS = """
SELECT t.id, t.xid::text AS xid, t.actor, t.role, t.application, t.run, t.started_at,
       coalesce(t.committed_at, rewind.commit_time(t.xid)) AS committed_at
FROM rewind.tx t
WHERE {tx_filter} AND (
    EXISTS (SELECT 1 FROM rewind.change c WHERE c.tx = t.id AND {table_filter})
    OR EXISTS (SELECT 1 FROM rewind.ddl c WHERE c.tx = t.id AND {table_filter}))
ORDER BY t.id DESC
LIMIT %(limit)s
"""

_ACTION_COUNTS = """
SELECT c.tx, k.schema_name || '.' || k.table_name AS tbl, c.op::text AS op, count(*) AS n
FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl
WHERE c.tx = ANY(%(ids)s::bigint[]) AND {table_filter}
GROUP BY 1, 2, 3
"""

_ACTION_DDL = """
SELECT d.tx, d.command || coalesce(' ' || d.object_identity, '') FROM rewind.ddl d
WHERE d.tx = ANY(%(ids)s::bigint[]) ORDER BY d.id
"""


def list_actions(dsn: str, selection: Selection | None = None, *, limit: int = 1000) -> list[Action]:
    """Newest first: one entry per transaction, with per-table counts."""
    selection = selection or Selection()
    with connect(dsn) as conn:
        require_installed(conn)
        return actions_on(conn, selection, limit=limit)


def actions_on(conn: psycopg.Connection, selection: Selection, *, limit: int = 1000) -> list[Action]:
    query = sql.SQL(_ACTIONS).format(tx_filter=selection.tx_filter("t"),
                                     table_filter=selection.table_filter("c"))
    params = {**selection.params(), "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        actions = {r["id"]: Action(**r) for r in cur.execute(query, params)}
    ids = list(actions)
    counts = sql.SQL(_ACTION_COUNTS).format(table_filter=selection.table_filter("c"))
    for tx, tbl, op, n in conn.execute(counts, {**selection.params(), "ids": ids}):
        per_table = actions[tx].tables.setdefault(
            tbl, {"insert": 0, "update": 0, "delete": 0, "truncate": 0})
        per_table[OPS[op]] += n
        actions[tx].changes += n
    for tx, text in conn.execute(_ACTION_DDL, {"ids": ids}):
        actions[tx].ddl.append(text)
    return list(actions.values())


_CHANGES = """
SELECT c.id, c.tx, k.schema_name || '.' || k.table_name AS tbl, k.key_columns, c.op::text,
       c.before, c.after, c.at, t.actor
FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl JOIN rewind.tx t ON t.id = c.tx
WHERE {where}
ORDER BY c.pos, c.id
LIMIT %(limit)s
"""


def _changes(conn: psycopg.Connection, where: sql.Composable, params: dict[str, Any],
             limit: int) -> list[Change]:
    rows = conn.execute(sql.SQL(_CHANGES).format(where=where), {**params, "limit": limit})
    return [Change(id=r[0], action=r[1], table=r[2], key=row_key(r[3], r[5] or r[6]), op=r[4],
                   before=r[5], after=r[6], at=r[7], actor=r[8]) for r in rows]


def show_action(dsn: str, action_id: int, *, limit: int = 10000) -> tuple[Action, list[Change]]:
    """One action and every change it made, in order."""
    with connect(dsn) as conn:
        require_installed(conn)
        found = actions_on(conn, Selection(actions=[action_id]), limit=1)
        if not found:
            raise BadInput(f"unknown action id: {action_id}")
        return found[0], _changes(conn, sql.SQL("c.tx = %(tx)s"), {"tx": action_id}, limit)


def parse_key(text: str, key_columns: list[str]) -> dict[str, str]:
    """--pk VALUE for a one-column key, or a JSON object for any key."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"malformed --pk JSON: {exc}") from None
        if not isinstance(value, dict) or not value:
            raise BadInput("--pk JSON must be an object of column: value")
        if key_columns and set(value) != set(key_columns):  # a row is named by its whole key, and only by it
            raise BadInput(f"this table's key is ({', '.join(key_columns)}); --pk names ({', '.join(value)})")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    if len(key_columns) != 1:
        cols = ", ".join(key_columns) or "the whole row"
        raise BadInput(f"this table's key is ({cols}): pass --pk as a JSON object")
    return {key_columns[0]: text}


def row_history(dsn: str, table: str, pk: str, *, limit: int = 10000) -> list[Change]:
    """Every change to one row (by key value), oldest first, with the actor of each."""
    schema, name = split_name(table)
    with connect(dsn) as conn:
        require_installed(conn)
        row = find_by_name(table, lambda s, t: conn.execute(
            "SELECT id, key_columns FROM rewind.tracked WHERE schema_name = %s AND table_name = %s "
            "ORDER BY id DESC LIMIT 1", (s, t)).fetchone())
        if row is None:
            raise BadInput(f"unknown table: {schema}.{name} (never tracked)")
        key = parse_key(pk, list(row[1]))
        conds = []
        params: dict[str, Any] = {"tbl": row[0]}
        for side in ("before", "after"):
            terms = []
            for i, (col, val) in enumerate(key.items()):
                params[f"k{i}"], params[f"v{i}"] = col, str(val)
                terms.append(sql.SQL("c.{side} ->> %(k{i})s = %(v{i})s").format(
                    side=sql.Identifier(side), i=sql.SQL(str(i))))
            conds.append(sql.SQL("({})").format(sql.SQL(" AND ").join(terms)))
        where = sql.SQL("c.tbl = %(tbl)s AND ({})").format(sql.SQL(" OR ").join(conds))
        return _changes(conn, where, params, limit)
