"""Reading the mirror: the same actions, changes and row histories as journal.reading, from the
copy kept off the database, so they still answer after the database is gone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, func, or_, select, true

from journal.errors import BadInput
from journal.gaps import GapRecord
from journal.mirror import tables
from journal.mirror.store import MirrorStore
from journal.reading import OPS, Action, Change, parse_key, row_key
from journal.selection import Selection
from journal.tracking import find_by_name, split_name

__all__ = ["list_actions", "list_gaps", "row_history", "show_action", "tracked_ids", "unknown_actions"]


def _like_pattern(glob: str) -> str:
    """An actor glob (agent-*, bot-?) as a LIKE pattern with backslash escapes: LIKE reads the same
    on SQLite (made case-sensitive by the store) and PostgreSQL, where regexes do not."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


@contextmanager
def _reading(url: str) -> Iterator[Connection]:
    store = MirrorStore(url, upgrade=False)
    try:
        with store.engine.connect() as conn:
            yield conn
    finally:
        store.close()


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _tx_filter(sel: Selection) -> ColumnElement[bool]:
    t = tables.tx.c
    parts: list[ColumnElement[bool]] = [true()]
    if sel.actors:
        parts.append(or_(*(t.actor.like(_like_pattern(a), escape="\\") for a in sel.actors)))
    if sel.roles:
        parts.append(t.role.in_(sel.roles))
    if sel.runs:
        parts.append(t.run.in_(sel.runs))
    if sel.actions:
        parts.append(t.id.in_(sel.actions))
    if sel.since:
        parts.append(t.started_at >= _time(sel.since))
    if sel.until:
        parts.append(t.started_at <= _time(sel.until))
    if sel.after:
        parts.append(or_(t.committed_at > _time(sel.after), t.started_at > _time(sel.after)))
    return and_(*parts)


def _actions(conn: Connection, sel: Selection, limit: int) -> list[Action]:
    t, c, d = tables.tx, tables.change, tables.ddl
    table_c = c.c.tbl.in_(sel.tables) if sel.tables else true()
    table_d = d.c.tbl.in_(sel.tables) if sel.tables else true()
    query = (select(t.c.id, t.c.xid, t.c.actor, t.c.role, t.c.application, t.c.run, t.c.started_at,
                    t.c.committed_at)
             .where(_tx_filter(sel))
             .where(or_(exists().where(c.c.tx == t.c.id, table_c), exists().where(d.c.tx == t.c.id, table_d)))
             .order_by(t.c.id.desc()).limit(limit))
    actions = {r.id: Action(id=r.id, xid=r.xid, actor=r.actor, role=r.role, application=r.application, run=r.run,
                            started_at=datetime.fromisoformat(r.started_at),
                            committed_at=_parse_time(r.committed_at))
               for r in conn.execute(query)}
    ids = list(actions)
    counts = (select(c.c.tx, c.c.table_name, c.c.op, func.count())
              .where(c.c.tx.in_(ids), table_c).group_by(c.c.tx, c.c.table_name, c.c.op))
    for tx, name, op, n in conn.execute(counts):
        per_table = actions[tx].tables.setdefault(name, {"insert": 0, "update": 0, "delete": 0, "truncate": 0})
        per_table[OPS[op]] += n
        actions[tx].changes += n
    ddl_text = (select(d.c.tx, d.c.command, d.c.object_identity).where(d.c.tx.in_(ids))
                .order_by(d.c.commit_lsn, d.c.seq))
    for tx, cmd, identity in conn.execute(ddl_text):
        actions[tx].ddl.append(cmd + (" " + identity if identity is not None else ""))
    return list(actions.values())


def list_actions(url: str, selection: Selection | None = None, *, limit: int = 1000) -> list[Action]:
    """Newest first, one entry per transaction, as journal.list_actions gives from the database."""
    with _reading(url) as conn:
        return _actions(conn, selection or Selection(), limit)


def list_gaps(url: str, since: datetime | None = None, until: datetime | None = None) -> list[GapRecord]:
    """The mirror's capture gaps, newest first, as journal.gaps.list_gaps gives from the database."""
    g = tables.gap.c
    query = select(g.kind, g.xid, g.table_name, g.changes, g.complete, g.at, g.detail)
    if since:
        query = query.where(g.at >= _time(since))
    if until:
        query = query.where(g.at <= _time(until))
    with _reading(url) as conn:
        return [GapRecord(kind=r.kind, xid=r.xid, table=r.table_name, changes=r.changes, complete=bool(r.complete),
                          at=datetime.fromisoformat(r.at), detail=json.loads(r.detail) if r.detail else None)
                for r in conn.execute(query.order_by(g.at.desc(), g.id.desc()))]


def _key_columns(conn: Connection) -> dict[int, list[str]]:
    k = tables.tracked.c
    return {r.id: json.loads(r.key_columns) for r in conn.execute(select(k.id, k.key_columns))}


def _changes(conn: Connection, where: ColumnElement[bool], limit: int) -> list[Change]:
    c, t = tables.change, tables.tx
    keys = _key_columns(conn)
    query = (select(c.c.id, c.c.tx, c.c.tbl, c.c.table_name, c.c.op, c.c.before, c.c.after, c.c.at, t.c.actor)
             .join(t, t.c.id == c.c.tx).where(where).order_by(c.c.pos, c.c.id).limit(limit))
    out = []
    for r in conn.execute(query):
        before = json.loads(r.before) if r.before is not None else None
        after = json.loads(r.after) if r.after is not None else None
        out.append(Change(id=r.id, action=r.tx, table=r.table_name, op=r.op,
                          key=row_key(keys.get(r.tbl, []), before or after), before=before, after=after,
                          at=datetime.fromisoformat(r.at), actor=r.actor))
    return out


def show_action(url: str, action_id: int, *, limit: int = 10000) -> tuple[Action, list[Change]]:
    with _reading(url) as conn:
        found = _actions(conn, Selection(actions=[action_id]), 1)
        if not found:
            raise BadInput(f"unknown action id: {action_id}")
        return found[0], _changes(conn, tables.change.c.tx == action_id, limit)


def _as_text(value: Any) -> str | None:
    """A JSON value as PostgreSQL's ->> renders it, to compare with a --pk value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _matches(image_text: str | None, key: dict[str, str]) -> bool:
    if image_text is None:
        return False
    # numbers stay as written (1.50 stays 1.50), as ->> gives them
    image = json.loads(image_text, parse_float=str, parse_int=str)
    return all(_as_text(image.get(col)) == str(val) for col, val in key.items())


def row_history(url: str, table: str, pk: str, *, limit: int = 10000) -> list[Change]:
    """Every change to one row, oldest first. The key is matched in Python over the table's
    changes: the mirror keeps images as text and is read rarely, so it carries no JSON index."""
    schema, name = split_name(table)
    k = tables.tracked.c
    with _reading(url) as conn:
        row = find_by_name(table, lambda s, t: conn.execute(
            select(k.id, k.key_columns).where(k.schema_name == s, k.table_name == t)
            .order_by(k.id.desc()).limit(1)).first())
        if row is None:
            raise BadInput(f"unknown table: {schema}.{name} (never tracked)")
        key = parse_key(pk, json.loads(row.key_columns))
        c = tables.change.c
        hits = [r.id for r in conn.execute(select(c.id, c.before, c.after).where(c.tbl == row.id))
                if _matches(r.before, key) or _matches(r.after, key)]
        return _changes(conn, and_(c.tbl == row.id, c.id.in_(hits)), limit) if hits else []


def tracked_ids(url: str, names: list[str]) -> list[int]:
    """Tracked ids for table names, from the mirror's copy of rewind.tracked."""
    k = tables.tracked.c
    with _reading(url) as conn:
        ids: list[int] = []
        for name in names:
            found = find_by_name(name, lambda s, t: [r[0] for r in conn.execute(
                select(k.id).where(k.schema_name == s, k.table_name == t))])
            schema, table = split_name(name)
            if not found:
                raise BadInput(f"unknown table: {schema}.{table} (not tracked)")
            ids += found
        return ids


def unknown_actions(url: str, ids: list[int]) -> list[int]:
    with _reading(url) as conn:
        known = {r[0] for r in conn.execute(select(tables.tx.c.id).where(tables.tx.c.id.in_(ids)))}
        return [i for i in ids if i not in known]
