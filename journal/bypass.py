"""Bypass detection: decoded writes to tracked tables that no journal row covers.

The stream receives the tracked tables' own changes (publication rewind_tables) next to the
journal's rows. A write that went around the triggers (ALTER TABLE ... DISABLE TRIGGER,
SET session_replication_role = replica) shows up as a decoded row with no journal row for it in
the same transaction.

Which rows exactly, not only how many: every journal row carries `pos`, the WAL insert position
when its statement was journaled, and every decoded row its own WAL position. The capture
triggers run after their statement's rows (AFTER ROW triggers fire at the end of the statement),
so a journaled row lies before its journal row's pos and after the previous statement's. Walking
a table's journal rows in pos order, each claims the nearest unclaimed decoded row of the same
operation before it; what nobody claims went around the triggers. A transaction that disables the
triggers for one statement and journals the next therefore reports exactly that statement's rows
(with their images), where a per-table count would only know how many. When the counts agree,
nothing is walked: that is the stream's hot path (every journaled transaction), and journal rows
never outnumber decoded ones.

Row images are what WAL carries: the new row of an INSERT/UPDATE, and the old row of an
UPDATE/DELETE in full only under REPLICA IDENTITY FULL (else its key only, or nothing when an
UPDATE kept the key). TOASTed values an UPDATE did not change are not in WAL; under FULL they are
taken from the old row, otherwise the image lists them as `unchanged` and is incomplete.

A TRUNCATE is a bypass when no journal 'T' row of that table precedes it in its transaction; the
trigger that truncates an empty table journals no row but a 'rewind.truncate' message, which the
stream passes in as one (WAL carries no rows of a TRUNCATE: such a gap is never complete). A
journaled UPDATE that moves a row to another partition is one journal row against a decoded DELETE
and INSERT, which are paired up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from operator import attrgetter, itemgetter
from typing import Any, Final, TypeAlias

from journal.mirror.store import Gap
from journal.pgoutput import UNCHANGED, Decoder, Delete, Insert, Relation, TupleData, Update

__all__ = ["MAX_IMAGES", "DecodedRow", "bypass_gap", "find_bypasses", "find_misfiled"]

# (the table's Relation when the row arrived, the row's WAL position, the pgoutput payload)
DecodedRow: TypeAlias = tuple[Relation, int, bytes]

# Images kept per gap; a bigger bypass keeps its count and is marked incomplete.
MAX_IMAGES: Final = 50_000

_OPS: Final = {73: "I", 85: "U", 68: "D", 84: "T"}
_POS, _TX, _TBL, _NAME, _OP = 3, 4, 5, 6, 7  # in a mirror change row (journal.mirror.store.CHANGE_COLUMNS order)
_DDL_TX = 3  # in a mirror ddl row (DDL_COLUMNS order)
_TBL_OF, _OP_OF, _TX_OF, _DDL_TX_OF = itemgetter(_TBL), itemgetter(_OP), itemgetter(_TX), itemgetter(_DDL_TX)
_REL, _PAYLOAD, _KIND = itemgetter(0), itemgetter(2), itemgetter(0)
_OID = attrgetter("oid")


def find_bypasses(rows: list[DecodedRow], journal: list[tuple[Any, ...]], *, table_id: Callable[[Relation], str],
                  table_name: Callable[[Relation], str], xid: int, commit_lsn: int, commit_time: str) -> list[Gap]:
    """One bypass gap per table with decoded rows that the transaction's journal rows (mirror
    change rows) do not cover. table_id gives the tracked id the journal names a table by.

    Runs at the commit of every transaction that wrote to a tracked table, so the counting is
    done with C-level iteration (map, Counter) and per relation, never by a Python call per row."""
    rels = list(map(_REL, rows))
    oids = Counter(map(_OID, rels))
    by_oid = dict(zip(map(_OID, rels), rels, strict=True))
    truncated = 84 in set(map(_KIND, map(_PAYLOAD, rows)))
    journaled = Counter(map(_TBL_OF, journal))
    if "T" in set(map(_OP_OF, journal)):
        journaled = Counter(c[_TBL] for c in journal if c[_OP] != "T")
    gaps = []
    for oid, count in oids.items():
        tbl = table_id(by_oid[oid])
        if journaled[tbl] == count and not truncated:
            continue
        decoded = [r for r in rows if r[0].oid == oid]
        missed = _unclaimed(decoded, [(int(c[_POS]), c[_OP]) for c in journal if c[_TBL] == tbl])
        if missed:
            gaps.append(bypass_gap(missed, table_name(missed[-1][0]), xid, commit_lsn, commit_time))
    return gaps


def find_misfiled(changes: list[tuple[Any, ...]], ddls: list[tuple[Any, ...]], txs: list[tuple[Any, ...]], *,
                  xid: int, commit_lsn: int, commit_time: str) -> Gap | None:
    """A gap for journal rows (mirror change and ddl rows) that a transaction filed under a
    transaction record it did not write; None when it filed all under its own.

    The capture triggers take the record's id from a setting that a session can set itself, and so
    file its changes under another transaction's record: another actor, another role, and no record
    of its own. WAL says which transaction wrote each journal row, so the stream can tell. Run at
    every commit with journal rows: one set comparison unless something is misfiled."""
    own = {str(t[0]) for t in txs}
    if set(map(str, map(_TX_OF, changes))) <= own and set(map(str, map(_DDL_TX_OF, ddls))) <= own:
        return None
    misfiled = [c for c in changes if str(c[_TX]) not in own]
    ddl = [d for d in ddls if str(d[_DDL_TX]) not in own]
    tables = Counter(str(c[_NAME]) for c in misfiled)
    detail: dict[str, Any] = {
        "misfiled": True, "tables": dict(tables), "ddl": len(ddl),
        "filed_under": sorted({int(r[_TX]) for r in misfiled} | {int(d[_DDL_TX]) for d in ddl}),
        "own_records": sorted(int(i) for i in own)}
    return Gap(kind="bypass", complete=False, at=commit_time, xid=str(xid), table_name=None,
               changes=len(misfiled) + len(ddl), end_lsn=commit_lsn, detail=detail)


def _unclaimed(decoded: list[DecodedRow], journal: list[tuple[int, str]]) -> list[DecodedRow]:
    truncates = sorted(pos for pos, op in journal if op == "T")
    claims = sorted((pos, op) for pos, op in journal if op != "T")
    stacks: dict[str, list[DecodedRow]] = {"I": [], "U": [], "D": []}
    missed: list[DecodedRow] = []
    i, after = 0, -1
    for row in decoded:  # a TRUNCATE is covered by a journal 'T' row (BEFORE trigger) before it
        if row[2][0] == 84:
            if not any(after < pos < row[1] for pos in truncates):
                missed.append(row)
            after = row[1]
    rows = [r for r in decoded if r[2][0] != 84]
    for pos, op in claims:
        while i < len(rows) and rows[i][1] < pos:
            stacks[_OPS[rows[i][2][0]]].append(rows[i])
            i += 1
        if stacks[op]:
            stacks[op].pop()
        elif op == "U" and stacks["D"] and stacks["I"]:  # moved to another partition
            stacks["D"].pop()
            stacks["I"].pop()
    missed += rows[i:]
    for stack in stacks.values():
        missed += stack
    return sorted(missed, key=lambda r: r[1])


def bypass_gap(rows: list[DecodedRow], table: str, xid: int, commit_lsn: int, commit_time: str) -> Gap:
    full = all(r[0].replica_identity == "f" for r in rows)
    decoder = Decoder()
    images = [_image(r, decoder) for r in rows[:MAX_IMAGES]]
    ops = Counter(image["op"] for image in images)
    flags = [image.pop("complete") for image in images]
    complete = len(rows) <= MAX_IMAGES and all(flags)
    detail: dict[str, Any] = {"identity": "full" if full else "key only", "operations": dict(ops)}
    if len(rows) > MAX_IMAGES:
        detail["images_kept"] = MAX_IMAGES
    if ops.get("T"):
        detail["note"] = "TRUNCATE: WAL carries none of the rows it removed"
    return Gap(kind="bypass", complete=complete, at=commit_time, xid=str(xid), table_name=table,
               changes=len(rows), start_lsn=rows[0][1], end_lsn=commit_lsn, detail=detail, images=images)


def _image(row: DecodedRow, decoder: Decoder) -> dict[str, Any]:
    """{op, lsn, before, after, unchanged, complete} of one decoded row; values in PostgreSQL's text.
    The decoder is told the row's Relation: a row is decoded with the columns it was sent with."""
    rel, _, payload = row
    if payload[0] == 84:
        return {"op": "T", "lsn": row[1], "before": None, "after": None, "complete": False}
    decoder.relations[rel.oid] = rel
    m = decoder.decode(payload)
    names = rel.column_names
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    full_before = False
    if isinstance(m, Insert):
        op, after = "I", _values(names, m.new)
    elif isinstance(m, Update):
        op, after = "U", _values(names, m.new)
        if m.old is not None:
            full_before = m.old_kind == "O"
            before = _values(names, m.old) if full_before else _key(rel, m.old)
    else:
        assert isinstance(m, Delete)
        op, full_before = "D", m.old_kind == "O"
        before = _values(names, m.old) if full_before else _key(rel, m.old)
    if after is not None and before is not None and full_before:
        after = {n: before[n] if v is UNCHANGED else v for n, v in after.items()}
    unchanged = sorted({n for image in (before, after) if image for n, v in image.items() if v is UNCHANGED})
    before, after = _known(before), _known(after)
    complete = not unchanged and (op == "I" or full_before)
    image: dict[str, Any] = {"op": op, "lsn": row[1], "before": before, "after": after, "complete": complete}
    if unchanged:
        image["unchanged"] = unchanged
    return image


def _known(image: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if image is None else {n: v for n, v in image.items() if v is not UNCHANGED}


def _values(names: tuple[str, ...], values: TupleData) -> dict[str, Any]:
    return {n: (v.hex() if isinstance(v, bytes) else v) for n, v in zip(names, values, strict=True)}


def _key(rel: Relation, values: TupleData) -> dict[str, Any]:
    """The replica identity's columns of a key-only old tuple (the others are sent as NULL)."""
    return {c.name: v for c, v in zip(rel.columns, values, strict=True) if c.key}
