"""Stream mode: the sidecar writes the row images WAL carried into the journal.

A table in stream mode (rewind track --mode stream) has no capture trigger for its rows. WAL
carries them whole (REPLICA IDENTITY FULL: the complete old row of every UPDATE and DELETE, TOASTed
values included), and a statement trigger tells who wrote them, once per transaction, as a
transactional logical message ('rewind.context'). At the commit of such a transaction the stream
hands its rows here, and they become rewind.change rows like the triggers' own: to_jsonb images of
typed values, each at its WAL position (`pos`), so that the planner orders them among the
journal's other changes exactly as they happened, and preview and undo work as in journal mode.

Their transaction record is the journal's own when the transaction also journaled something (it
wrote a journal-mode table, or truncated: WAL carries no rows of a TRUNCATE, so that stays with the
trigger), else a new one from the message, with its commit LSN and time already set.

Values arrive as PostgreSQL's text (in the stream's session settings, journal.replication) with
each column's type; each is cast back to its type in SQL and rendered by to_jsonb, which is what
to_jsonb(row) does per column. Rows whose images are not complete (the table lost its FULL replica
identity behind rewind's back) are not journaled but reported as a bypass gap: they cannot be
undone.

One database transaction per batch, recording each commit LSN in rewind.ingested: a replay after
a crash before the slot heard of it writes nothing twice. What it writes comes back through the
stream as journal rows and reaches the mirror that way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from journal.bypass import DecodedRow, bypass_gap, row_image
from journal.mirror.store import Gap
from journal.pgoutput import Decoder, Relation, format_lsn

__all__ = ["CONTEXT_PREFIX", "StreamTx", "ingest", "prepare"]

CONTEXT_PREFIX: Final = "rewind.context"

# jsonb_build_object takes at most 100 arguments: wider rows are built from pieces joined by ||.
_PAIRS_PER_CALL: Final = 50

_INGESTED = "SELECT commit_lsn::text FROM rewind.ingested WHERE commit_lsn = ANY(%s::pg_lsn[])"
_NEW_IDS = "SELECT nextval('rewind.tx_id_seq') FROM generate_series(1, %s)"
_INSERT_TX = """
INSERT INTO rewind.tx (id, xid, actor, role, application, client_addr, pid, run, started_at, commit_lsn, committed_at)
SELECT * FROM unnest(%s::bigint[], %s::text[]::xid8[], %s::text[], %s::text[], %s::text[], %s::inet[], %s::int[],
                     %s::text[], %s::timestamptz[], %s::pg_lsn[], %s::timestamptz[])
"""
_INSERT_INGESTED = """
INSERT INTO rewind.ingested (commit_lsn, tx, changes)
SELECT * FROM unnest(%s::pg_lsn[], %s::bigint[], %s::int[])
"""
_TYPES = """
SELECT t.oid, n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY(%s::oid[])
"""


@dataclass
class StreamTx:
    """One committed transaction's rows of stream-mode tables, as decoded."""

    xid: int
    commit_lsn: int
    commit_time: str  # ISO-8601
    context: bytes | None  # the 'rewind.context' message's content
    journal_tx: int | None  # the journal's own record of the transaction, if it has one
    rows: list[DecodedRow]
    replay: bool = False  # the mirror has this transaction already (its gaps too)


@dataclass
class _Row:
    tbl: int
    rel: Relation
    image: dict[str, Any]


@dataclass
class _Ready:
    tx: StreamTx
    rows: list[_Row] = field(default_factory=list)


def prepare(txs: list[StreamTx], table_id: Callable[[Relation], str], table_name: Callable[[Relation], str]
            ) -> tuple[list[_Ready], list[Gap]]:
    """The images of every row, and a bypass gap per table for rows whose images are incomplete.
    Deterministic, so that a replay reports the same gaps."""
    decoder = Decoder()
    ready: list[_Ready] = []
    gaps: list[Gap] = []
    for tx in txs:
        r = _Ready(tx)
        incomplete: dict[int, list[DecodedRow]] = {}
        for row in tx.rows:
            image = row_image(row, decoder)
            if image.pop("complete"):
                r.rows.append(_Row(int(table_id(row[0])), row[0], image))
            else:
                incomplete.setdefault(row[0].oid, []).append(row)
        gaps += [bypass_gap(rows, table_name(rows[0][0]), tx.xid, tx.commit_lsn, tx.commit_time)
                 for rows in incomplete.values()]
        ready.append(r)
    return ready, gaps


class _Types:
    """Type names by oid, for the casts; asked of the database once per oid."""

    def __init__(self) -> None:
        self._names: dict[int, sql.Identifier] = {}

    def names(self, db: psycopg.Connection[Any], oids: set[int]) -> dict[int, sql.Identifier]:
        missing = [o for o in oids if o not in self._names]
        if missing:
            for oid, nsp, name in db.execute(_TYPES, (missing,)):
                self._names[int(oid)] = sql.Identifier(nsp, name)
        return self._names


_types = _Types()


def ingest(db: psycopg.Connection[Any], ready: list[_Ready]) -> int:
    """Journal the prepared transactions not journaled before; returns the rows written."""
    ready = [r for r in ready if r.rows]
    if not ready:
        return 0
    written = 0
    with db.transaction():
        seen = {row[0] for row in db.execute(_INGESTED, ([format_lsn(r.tx.commit_lsn) for r in ready],))}
        ready = [r for r in ready if format_lsn(r.tx.commit_lsn) not in seen]
        if not ready:
            return 0
        tx_ids = _transaction_records(db, ready)
        groups: dict[tuple[int, int], list[tuple[int, _Row]]] = {}
        for r, tx_id in zip(ready, tx_ids, strict=True):
            for row in r.rows:
                groups.setdefault((row.tbl, id(row.rel)), []).append((tx_id, row))
        commit_times = {tx_id: r.tx.commit_time for r, tx_id in zip(ready, tx_ids, strict=True)}
        for (tbl, _), rows in groups.items():
            written += _insert_changes(db, tbl, rows, commit_times)
        db.execute(_INSERT_INGESTED, ([format_lsn(r.tx.commit_lsn) for r in ready], tx_ids,
                                      [len(r.rows) for r in ready]))
    return written


def _transaction_records(db: psycopg.Connection[Any], ready: list[_Ready]) -> list[int]:
    """The record each transaction's rows go under: the journal's own, or a new one from its
    context message (a transaction without either never gets here: it is a bypass)."""
    new = [r for r in ready if r.tx.journal_tx is None]
    ids = iter([int(row[0]) for row in db.execute(_NEW_IDS, (len(new),))] if new else [])
    out: list[int] = []
    columns: list[list[Any]] = [[] for _ in range(11)]
    for r in ready:
        if r.tx.journal_tx is not None:
            out.append(r.tx.journal_tx)
            continue
        ctx = json.loads(r.tx.context or b"{}")
        tx_id = next(ids)
        out.append(tx_id)
        for column, value in zip(columns, (
                tx_id, ctx["xid"], ctx["actor"], ctx["role"], ctx.get("application"), ctx.get("client_addr"),
                ctx.get("pid"), ctx.get("run"), ctx["started_at"], format_lsn(r.tx.commit_lsn), r.tx.commit_time),
                strict=True):
            column.append(value)
    if new:
        db.execute(_INSERT_TX, columns)
    return out


def _insert_changes(db: psycopg.Connection[Any], tbl: int, rows: list[tuple[int, _Row]],
                    commit_times: dict[int, str]) -> int:
    """One INSERT for the rows of one table decoded under one Relation (one set of columns)."""
    rel = rows[0][1].rel
    names = _types.names(db, {c.type_oid for c in rel.columns})
    columns = [(c.name, names[c.type_oid]) for c in rel.columns]
    params: dict[str, Any] = {
        "tbl": tbl,
        "tx": [tx for tx, _ in rows],
        "pos": [row.image["lsn"] for _, row in rows],
        "op": [row.image["op"] for _, row in rows],
        "hb": [row.image["before"] is not None for _, row in rows],
        "ha": [row.image["after"] is not None for _, row in rows],
        "at": [commit_times[tx] for tx, _ in rows],
    }
    for side in ("before", "after"):
        for i, (name, _) in enumerate(columns):
            params[f"{side[0]}{i}"] = [(row.image[side] or {}).get(name) for _, row in rows]
    return db.execute(_change_insert(columns), params).rowcount


def _change_insert(columns: list[tuple[str, sql.Identifier]]) -> sql.Composed:
    def image(side: str) -> sql.Composable:
        pairs = [sql.SQL("{}::text, to_jsonb(v.{}::{})").format(sql.Literal(name), sql.Identifier(f"{side}{i}"), typ)
                 for i, (name, typ) in enumerate(columns)]
        calls: list[sql.Composable] = [
            sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs[i:i + _PAIRS_PER_CALL]))
            for i in range(0, len(pairs), _PAIRS_PER_CALL)] or [sql.SQL("'{}'::jsonb")]
        return sql.SQL(" || ").join(calls)

    arrays = [sql.SQL("{}::text[]").format(sql.Placeholder(f"{side}{i}"))
              for side in ("b", "a") for i in range(len(columns))]
    aliases = [sql.Identifier(f"{side}{i}") for side in ("b", "a") for i in range(len(columns))]
    return sql.SQL("""
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after, at)
        SELECT v.tx, v.pos, %(tbl)s, v.op, CASE WHEN v.hb THEN {before} END, CASE WHEN v.ha THEN {after} END, v.at
        FROM unnest(%(tx)s::bigint[], %(pos)s::bigint[], %(op)s::"char"[], %(hb)s::bool[], %(ha)s::bool[],
                    %(at)s::timestamptz[], {arrays}) AS v(tx, pos, op, hb, ha, at, {aliases})
    """).format(before=image("b"), after=image("a"), arrays=sql.SQL(", ").join(arrays),
                aliases=sql.SQL(", ").join(aliases))
