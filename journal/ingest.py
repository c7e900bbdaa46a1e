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
a crash before the slot heard of it writes nothing twice. The rows written are marked (src 's') and
kept out of the stream by the publication's row filter; instead they come back from the INSERT
(RETURNING, as the stream would render them: the connection has the stream's session settings)
and go to the mirror with the batch, after the database commit. A transaction journaled before
but not mirrored (a crash between the two) is read back from the database.

Two ways in. Where every column has a type whose to_jsonb rendering follows from its text by a
fixed rule (integers, numeric, bool, text and its kin, uuid, json, and timestamps in ISO form), the
images are written here as JSON and COPYed in with ids taken from the sequence: a third of the
database's work per row of INSERT ... SELECT with casts and to_jsonb (6 against 16 us, measured),
and nothing to read back for the mirror. Any other table, or a value outside the rule (a BC date,
infinity), takes the INSERT for its whole group, with the casts in SQL. There, values travel as
text arrays written out here, not as Python lists for the driver to adapt: its per-element quoting
check was half of the sidecar's time per change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from journal.bypass import DecodedRow, bypass_gap
from journal.mirror.store import Gap, iso_utc
from journal.pgoutput import UNCHANGED, Decoder, Delete, Insert, Relation, TupleData, Update, format_lsn, parse_lsn

__all__ = ["CONTEXT_PREFIX", "StreamTx", "ingest", "ingest_or_report", "prepare", "typed_image"]

CONTEXT_PREFIX: Final = "rewind.context"

# jsonb_build_object takes at most 100 arguments: wider rows are built from pieces joined by ||.
_PAIRS_PER_CALL: Final = 50

_INGESTED = "SELECT commit_lsn::text, tx FROM rewind.ingested WHERE commit_lsn = ANY(%s::pg_lsn[])"
_TX_TEXT = """id::text, xid::text, actor, role, application, client_addr::text, pid::text, run, started_at::text,
              commit_lsn::text, committed_at::text"""
_CHANGE_TEXT = "id::text, pos::text, tx::text, tbl::text, op::text, before::text, after::text, at::text"
_INSERT_INGESTED = """
INSERT INTO rewind.ingested (commit_lsn, tx, changes)
SELECT * FROM unnest(%s::text[]::pg_lsn[], %s::text[]::bigint[], %s::text[]::int[])
"""
# A transaction journaled but not mirrored: its rows as the INSERTs returned them.
_READ_BACK_TX = f"SELECT {_TX_TEXT} FROM rewind.tx WHERE src IS NOT NULL AND id = ANY(%s::bigint[])"
_READ_BACK_CHANGES = f"""
SELECT {_CHANGE_TEXT} FROM rewind.change
WHERE src IS NOT NULL AND tx = ANY(%s::bigint[]) AND pos = ANY(%s::bigint[])
"""
_TYPES = """
SELECT t.oid, n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY(%s::oid[])
"""

# An image: the row's values in its Relation's column order, as text (None for NULL).
Image = Sequence[str | None]

_CHANGE_COPY = "COPY rewind.change (id, tx, pos, tbl, op, before, after, at, src) FROM STDIN"
_TX_COPY = """COPY rewind.tx (id, xid, actor, role, application, client_addr, pid, run, started_at, commit_lsn,
              committed_at, src) FROM STDIN"""
_NEXT_IDS = "SELECT string_agg(nextval(%s::regclass)::text, ',') FROM generate_series(1, %s)"  # one row to read


class _NotSimple(Exception):
    """A value whose JSON form is not the fixed rule's: its group goes through SQL."""


_encode_string = json.JSONEncoder(ensure_ascii=False).encode
_ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\Z")
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00\Z")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d\Z")


def _numeric(v: str) -> str:
    return v if v[-1].isdigit() else _encode_string(v)  # NaN and the infinities are strings in JSON


def _timestamp(v: str) -> str:
    if not _ISO_TIMESTAMP.match(v):
        raise _NotSimple(v)
    return '"' + v.replace(" ", "T", 1) + '"'


def _timestamptz(v: str) -> str:  # the stream renders in UTC, and so does the journaling session
    if not _ISO_UTC.match(v):
        raise _NotSimple(v)
    return '"' + v.replace(" ", "T", 1) + ':00"'


def _date(v: str) -> str:
    if not _ISO_DATE.match(v):
        raise _NotSimple(v)
    return '"' + v + '"'


# type oid -> the JSON of a value from its text, as to_jsonb renders it
_JSON_OF: Final[dict[int, Callable[[str], str]]] = {
    20: str, 21: str, 23: str,  # int8, int2, int4
    16: lambda v: "true" if v == "t" else "false",
    1700: _numeric,
    25: _encode_string, 1043: _encode_string, 1042: _encode_string, 19: _encode_string, 2950: _encode_string,
    114: str, 3802: str,  # json, jsonb: the text is the JSON
    1114: _timestamp, 1184: _timestamptz, 1082: _date,
}


def _json_images(rel: Relation) -> Callable[[Image], str] | None:
    """A function writing an image of rel's rows as JSON, when every column's type has a rule."""
    if not all(c.type_oid in _JSON_OF for c in rel.columns):
        return None
    keys = [_encode_string(c.name) + ":" for c in rel.columns]
    converters = [_JSON_OF[c.type_oid] for c in rel.columns]

    def image(values: Image) -> str:
        return "{" + ",".join([k + ("null" if v is None else f(v))
                               for k, f, v in zip(keys, converters, values, strict=True)]) + "}"
    return image


def _pg_timestamptz(iso: str) -> str:
    """An ISO-8601 UTC time as PostgreSQL writes a timestamptz in the stream's settings."""
    text = iso.replace("T", " ", 1).removesuffix("+00:00")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "+00"


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
    pos: int
    op: str
    before: Image | None
    after: Image | None


@dataclass
class _Ready:
    tx: StreamTx
    rows: list[_Row] = field(default_factory=list)


@dataclass
class Mirrored:
    """What ingest wrote, in the mirror's row shapes (journal.mirror.store.Batch)."""

    txs: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)


def prepare(txs: list[StreamTx], table_id: Callable[[Relation], str], table_name: Callable[[Relation], str]
            ) -> tuple[list[_Ready], list[Gap]]:
    """The images of every row, and a bypass gap per table for rows whose images are incomplete.
    Deterministic, so that a replay reports the same gaps."""
    decoder = Decoder()
    relations = decoder.relations
    ready: list[_Ready] = []
    gaps: list[Gap] = []
    for tx in txs:
        r = _Ready(tx)
        incomplete: dict[int, list[DecodedRow]] = {}
        for row in tx.rows:
            rel, pos, payload = row
            relations[rel.oid] = rel
            image = _image(decoder.decode(payload))
            if image is None:
                incomplete.setdefault(rel.oid, []).append(row)
            else:
                r.rows.append(_Row(int(table_id(rel)), rel, pos, *image))
        gaps += [bypass_gap(rows, table_name(rows[0][0]), tx.xid, tx.commit_lsn, tx.commit_time)
                 for rows in incomplete.values()]
        ready.append(r)
    return ready, gaps


def _image(m: Any) -> tuple[str, Image | None, Image | None] | None:
    """(op, before, after) of a decoded row; None when WAL did not carry it whole (an old row of
    its key only, or a TOASTed value an UPDATE kept that no old row repeats)."""
    if isinstance(m, Insert):
        return ("I", None, _text(m.new)) if UNCHANGED not in m.new else None
    if isinstance(m, Delete):
        return ("D", _text(m.old), None) if m.old_kind == "O" else None
    assert isinstance(m, Update)
    if m.old is None or m.old_kind != "O":
        return None
    new = m.new
    if UNCHANGED in new:
        new = tuple(o if n is UNCHANGED else n for o, n in zip(m.old, new, strict=True))
    return "U", _text(m.old), _text(new)


def _text(values: TupleData) -> Image:
    """Values in text: the stream asks for text, so a binary value (hex here) is the exception."""
    if bytes not in map(type, values):
        return values  # type: ignore[return-value]  # no bytes, and UNCHANGED was replaced or refused
    return [v.hex() if isinstance(v, bytes) else v for v in values]  # type: ignore[misc]


def _array(values: list[Any]) -> str:
    """A text[] literal: each element quoted (backslash and double quote escaped), NULL for None.
    The common case, no NULL and nothing to escape, is one join."""
    if None not in values:
        text = '","'.join(map(str, values))
        if "\\" not in text and '"' not in text:
            return '{"' + text + '"}' if values else "{}"
    return "{" + ",".join("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


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


def ingest(db: psycopg.Connection[Any], ready: list[_Ready], names: dict[str, str]) -> Mirrored:
    """Journal the prepared transactions not journaled before, and return what the mirror needs:
    all that was written now, and, read back, what was journaled before but is not mirrored
    (not a replay). names: tracked id -> schema.table, for the mirror's rows."""
    ready = [r for r in ready if r.rows]
    out = Mirrored()
    if not ready:
        return out
    lsns = [format_lsn(r.tx.commit_lsn) for r in ready]
    with db.transaction():
        seen = {row[0] for row in db.execute(_INGESTED, (lsns,))}
        new = [r for r, lsn in zip(ready, lsns, strict=True) if lsn not in seen]
        again = [r for r, lsn in zip(ready, lsns, strict=True) if lsn in seen and not r.tx.replay]
        commit_of: dict[str, int] = {}  # tx id (text) -> commit LSN, for the mirror's keys
        if new:
            tx_ids = _transaction_records(db, new, out)
            for r, tx_id in zip(new, tx_ids, strict=True):
                commit_of[str(tx_id)] = r.tx.commit_lsn
            groups: dict[tuple[int, int], list[tuple[int, _Row]]] = {}
            for r, tx_id in zip(new, tx_ids, strict=True):
                for row in r.rows:
                    groups.setdefault((row.tbl, id(row.rel)), []).append((tx_id, row))
            commit_times = {tx_id: r.tx.commit_time for r, tx_id in zip(new, tx_ids, strict=True)}
            for (tbl, _), rows in groups.items():
                if not _copy_changes(db, tbl, rows, commit_times, commit_of, names, out):
                    _mirror_changes(out, db.execute(*_insert_changes(db, tbl, rows, commit_times)), commit_of, names)
            db.execute(_INSERT_INGESTED, (_array([format_lsn(r.tx.commit_lsn) for r in new]), _array(tx_ids),
                                          _array([len(r.rows) for r in new])))
        if again:
            _read_back(db, again, out, commit_of, names)
    return out


def ingest_or_report(db: psycopg.Connection[Any], ready: list[_Ready], names: dict[str, str],
                     table_name: Callable[[Relation], str]) -> tuple[Mirrored, list[Gap]]:
    """ingest, except that a transaction whose values the journal cannot hold (a json value with
    a NUL escape, which jsonb refuses) becomes a gap instead of failing the batch forever: the
    stream would retry it after every restart, and WAL would pile up behind it. The batch is tried
    whole first; after a data error, transaction by transaction."""
    try:
        return ingest(db, ready, names), []
    except psycopg.errors.DataError:
        pass
    out, gaps = Mirrored(), []
    for r in ready:
        try:
            one = ingest(db, [r], names)
        except psycopg.errors.DataError as exc:
            reason = " ".join(str(exc).split())
            by_table: dict[int, list[DecodedRow]] = {}
            for row in r.tx.rows:
                by_table.setdefault(row[0].oid, []).append(row)
            for rows in by_table.values():
                gap = bypass_gap(rows, table_name(rows[0][0]), r.tx.xid, r.tx.commit_lsn, r.tx.commit_time)
                gap.complete = False  # its images are not journal material either
                gap.detail = {**(gap.detail or {}), "note": f"stream mode could not journal these rows: {reason}"}
                gaps.append(gap)
            continue
        out.txs += one.txs
        out.changes += one.changes
    return out, gaps


def _transaction_records(db: psycopg.Connection[Any], ready: list[_Ready], out: Mirrored) -> list[int]:
    """The record each transaction's rows go under: the journal's own, or a new one from its
    context message (a transaction without either never gets here: it is a bypass)."""
    created = [r for r in ready if r.tx.journal_tx is None]
    ids = iter(_next_ids(db, "rewind.tx_id_seq", len(created)))
    out_ids: list[int] = []
    with db.cursor().copy(_TX_COPY) as copy:
        for r in ready:
            if r.tx.journal_tx is not None:
                out_ids.append(r.tx.journal_tx)
                continue
            tx_id = next(ids)
            out_ids.append(tx_id)
            ctx = json.loads(r.tx.context or b"{}")
            pid = ctx.get("pid")
            row = (str(tx_id), ctx["xid"], ctx["actor"], ctx["role"], ctx.get("application"), ctx.get("client_addr"),
                   None if pid is None else str(pid), ctx.get("run"))
            copy.write_row((*row, ctx["started_at"], format_lsn(r.tx.commit_lsn), r.tx.commit_time, "s"))
            out.txs.append((*row, iso_utc(ctx["started_at"]), r.tx.commit_lsn, iso_utc(r.tx.commit_time)))
    return out_ids


def _next_ids(db: psycopg.Connection[Any], sequence: str, n: int) -> list[int]:
    if not n:
        return []
    row = db.execute(_NEXT_IDS, (sequence, n)).fetchone()
    assert row is not None
    return [int(i) for i in row[0].split(",")]


def _copy_changes(db: psycopg.Connection[Any], tbl: int, rows: list[tuple[int, _Row]], commit_times: dict[int, str],
                  commit_of: dict[str, int], names: dict[str, str], out: Mirrored) -> bool:
    """The rows of one group by COPY with images written here; False (nothing written) when the
    group's table or one of its values has no fixed rule."""
    image = _json_images(rows[0][1].rel)
    if image is None:
        return False
    try:
        images = [(None if row.before is None else image(row.before), None if row.after is None else image(row.after))
                  for _, row in rows]
    except _NotSimple:
        return False
    ids = _next_ids(db, "rewind.change_id_seq", len(rows))
    name = names.get(str(tbl), f"tracked#{tbl}")
    pg_at = {tx: _pg_timestamptz(at) for tx, at in commit_times.items()}
    lines = []
    for ident, (tx, row), (before, after) in zip(ids, rows, images, strict=True):
        lines.append(f"{ident}\t{tx}\t{row.pos}\t{tbl}\t{row.op}\t{_copy_field(before)}\t{_copy_field(after)}\t"
                     f"{commit_times[tx]}\ts\n")
        out.changes.append((commit_of[str(tx)], row.pos, str(ident), str(row.pos), str(tx), str(tbl), name,
                            row.op, before, after, pg_at[tx]))
    with db.cursor().copy(_CHANGE_COPY) as copy:
        copy.write("".join(lines))  # one buffer: the driver's row-by-row formatting cost more than the rows
    return True


def _copy_field(text: str | None) -> str:
    """A value in COPY's text format. Images are JSON, so a backslash is common only in escaped
    strings, and a raw newline or tab only in json values' own whitespace."""
    if text is None:
        return "\\N"
    if "\\" in text or "\n" in text or "\t" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text


def _mirror_changes(out: Mirrored, rows: Any, commit_of: dict[str, int], names: dict[str, str]) -> None:
    """Mirror change rows from rewind.change text; keyed by (commit LSN, WAL position), which no
    other row of the same transaction has."""
    for ident, pos, tx, tbl, op, before, after, at in rows:
        out.changes.append((commit_of[tx], int(pos), ident, pos, tx, tbl, names.get(tbl, f"tracked#{tbl}"), op,
                            before, after, at))


def _read_back(db: psycopg.Connection[Any], again: list[_Ready], out: Mirrored, commit_of: dict[str, int],
               names: dict[str, str]) -> None:
    tx_ids = {r.tx.journal_tx for r in again if r.tx.journal_tx is not None}
    lsns = {format_lsn(r.tx.commit_lsn): r for r in again}
    for lsn_text, tx in db.execute(_INGESTED, (list(lsns),)):
        commit_of[str(tx)] = lsns[lsn_text].tx.commit_lsn
        tx_ids.add(int(tx))
    for row in db.execute(_READ_BACK_TX, (list(tx_ids),)):
        out.txs.append((*row[:8], iso_utc(row[8]), parse_lsn(row[9]), iso_utc(row[10])))
    positions = [row.pos for r in again for row in r.rows]
    _mirror_changes(out, db.execute(_READ_BACK_CHANGES, (list(tx_ids), positions)), commit_of, names)


def _insert_changes(db: psycopg.Connection[Any], tbl: int, rows: list[tuple[int, _Row]],
                    commit_times: dict[int, str]) -> tuple[sql.Composed, dict[str, Any]]:
    """One INSERT for the rows of one table decoded under one Relation (one set of columns)."""
    rel = rows[0][1].rel
    names = _types.names(db, {c.type_oid for c in rel.columns})
    columns = [(c.name, names[c.type_oid]) for c in rel.columns]
    width = len(columns)
    params: dict[str, Any] = {
        "tbl": tbl,
        "tx": _array([tx for tx, _ in rows]),
        "pos": _array([row.pos for _, row in rows]),
        "op": _array([row.op for _, row in rows]),
        "hb": _array(["t" if row.before is not None else "f" for _, row in rows]),
        "ha": _array(["t" if row.after is not None else "f" for _, row in rows]),
        "at": _array([commit_times[tx] for tx, _ in rows]),
    }
    nulls: list[str | None] = [None] * width
    befores, afters = [row.before or nulls for _, row in rows], [row.after or nulls for _, row in rows]
    for side, images in (("b", befores), ("a", afters)):
        for i, values in enumerate(zip(*images, strict=True)):
            params[f"{side}{i}"] = _array(list(values))
    return _change_insert(columns), params


def typed_image(columns: list[tuple[str, sql.Identifier]], texts: list[sql.Composable]) -> sql.Composable:
    """A jsonb image from each column's text: cast to the column's type and rendered by to_jsonb,
    which is what to_jsonb(row) does per column. (jsonb_populate_record would not do: it takes a
    JSON string for a json or jsonb column as a string, not as the document it spells.)"""
    pairs = [sql.SQL("{}::text, to_jsonb(({})::{})").format(sql.Literal(name), text, typ)
             for (name, typ), text in zip(columns, texts, strict=True)]
    calls: list[sql.Composable] = [
        sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs[i:i + _PAIRS_PER_CALL]))
        for i in range(0, len(pairs), _PAIRS_PER_CALL)] or [sql.SQL("'{}'::jsonb")]
    return sql.SQL(" || ").join(calls)


def _change_insert(columns: list[tuple[str, sql.Identifier]]) -> sql.Composed:
    def image(side: str) -> sql.Composable:
        return typed_image(columns, [sql.SQL("v.{}").format(sql.Identifier(f"{side}{i}")) for i in range(len(columns))])

    arrays = [sql.SQL("{}::text[]").format(sql.Placeholder(f"{side}{i}"))
              for side in ("b", "a") for i in range(len(columns))]
    aliases = [sql.Identifier(f"{side}{i}") for side in ("b", "a") for i in range(len(columns))]
    return sql.SQL("""
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after, at, src)
        SELECT v.tx, v.pos, %(tbl)s, v.op, CASE WHEN v.hb THEN {before} END, CASE WHEN v.ha THEN {after} END, v.at, 's'
        FROM unnest(%(tx)s::text[]::bigint[], %(pos)s::text[]::bigint[], %(op)s::text[]::"char"[],
                    %(hb)s::text[]::bool[], %(ha)s::text[]::bool[], %(at)s::text[]::timestamptz[], {arrays})
             AS v(tx, pos, op, hb, ha, at, {aliases})
        RETURNING {returning}
    """).format(before=image("b"), after=image("a"), arrays=sql.SQL(", ").join(arrays),
                aliases=sql.SQL(", ").join(aliases), returning=sql.SQL(_CHANGE_TEXT))
