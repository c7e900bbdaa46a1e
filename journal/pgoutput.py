"""Parsing PostgreSQL's pgoutput logical replication protocol (proto_version 1, messages on).

Pure Python on purpose: pgoutput is built into every PostgreSQL >= 10 and every managed service,
so the sidecar needs no extension on the server and no compiled code on the client. The decoder
is on the hot path of the stream (one call per decoded row), so it reads fixed fields with
precompiled ``struct`` formats and slices values out of the payload column by column; it never
loops over bytes.

Values arrive in PostgreSQL's text format, decoded as UTF-8 (the replication session sets
``client_encoding=UTF8``). A NULL is ``None``; a TOASTed value that an UPDATE did not change is
not sent at all and is represented by ``UNCHANGED``, which is not ``None``: "unchanged" and
"NULL" mean different things for anyone rebuilding the row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

__all__ = [
    "UNCHANGED", "Begin", "Column", "Commit", "Decoder", "Delete", "Insert", "Message", "Origin",
    "PgOutputMessage", "ProtocolError", "Relation", "Truncate", "TupleData", "Type", "Unchanged",
    "Update", "Value", "format_lsn", "parse_lsn", "pg_time", "tuple_data",
]


class Unchanged:
    """The 'u' kind of a tuple column: an unchanged TOASTed value that WAL does not carry."""

    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __bool__(self) -> bool:
        return False


UNCHANGED: Final = Unchanged()

Value: TypeAlias = str | bytes | Unchanged | None
TupleData: TypeAlias = tuple[Value, ...]

_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


def pg_time(micros: int) -> datetime:
    """A protocol timestamp (microseconds since 2000-01-01 UTC) as an aware datetime."""
    return _PG_EPOCH + timedelta(microseconds=micros)


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (16/B374D848)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class ProtocolError(ValueError):
    """A payload that is not pgoutput proto_version 1, or a row of a relation never described."""


@dataclass(slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record
    commit_time: datetime
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: what a consumer confirms once it has the transaction
    commit_time: datetime


@dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(slots=True, frozen=True)
class Column:
    key: bool  # part of the replica identity
    name: str
    type_oid: int
    type_modifier: int


@dataclass(slots=True, frozen=True)
class Relation:
    oid: int
    namespace: str  # empty for pg_catalog
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace or 'pg_catalog'}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(slots=True, frozen=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    relation: Relation
    new: TupleData


@dataclass(slots=True)
class Update:
    relation: Relation
    new: TupleData
    old: TupleData | None  # present when the key changed ('K') or with REPLICA IDENTITY FULL ('O')
    old_kind: str | None  # 'K', 'O' or None


@dataclass(slots=True)
class Delete:
    relation: Relation
    old: TupleData
    old_kind: str  # 'K' (key columns only, the rest NULL) or 'O' (REPLICA IDENTITY FULL)


@dataclass(slots=True)
class Truncate:
    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool


@dataclass(slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgOutputMessage: TypeAlias = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message

_BEGIN = struct.Struct(">qqI")
_COMMIT = struct.Struct(">bqqq")
_Q = struct.Struct(">q")
_I = struct.Struct(">I")
_i = struct.Struct(">i")
_H = struct.Struct(">H")
_REL_HEAD = struct.Struct(">I")
_COL_TAIL = struct.Struct(">Ii")
_MSG_HEAD = struct.Struct(">bq")
_TRUNC_HEAD = struct.Struct(">Ib")

_T, _N, _U, _B = ord("t"), ord("n"), ord("u"), ord("b")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def tuple_data(buf: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData at pos: Int16 column count, then per column a kind byte and, for 't'/'b', Int32
    length + bytes. Returns the values and the offset after them. The stream's hot path calls it
    directly for rows of relations it already knows (an Insert's tuple starts at offset 6)."""
    (count,) = _H.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack = _i.unpack_from
    for _ in range(count):
        kind = buf[pos]
        if kind == _T:
            end = pos + 5 + unpack(buf, pos + 1)[0]
            append(buf[pos + 5:end].decode())
            pos = end
        elif kind == _N:
            append(None)
            pos += 1
        elif kind == _U:
            append(UNCHANGED)
            pos += 1
        elif kind == _B:  # binary format; only with the 'binary' option (proto >= 2)
            end = pos + 5 + unpack(buf, pos + 1)[0]
            append(buf[pos + 5:end])
            pos = end
        else:
            raise ProtocolError(f"unknown tuple column kind {kind!r} at offset {pos}")
    return tuple(values), pos


class Decoder:
    """Decodes one pgoutput payload at a time, keeping the relation and type caches.

    A Relation message precedes the first row of a relation in every session and follows every
    change of its definition (ALTER TABLE), so the cache always describes the rows that follow.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, Type] = {}

    def relation(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise ProtocolError(f"row for relation {oid} before its Relation message") from None

    def decode(self, buf: bytes) -> PgOutputMessage:
        kind = buf[0]
        if kind == 73:  # 'I' — by far the most frequent, so first
            (oid,) = _I.unpack_from(buf, 1)
            new, _ = tuple_data(buf, 6)
            return Insert(self.relation(oid), new)
        if kind == 66:  # 'B'
            lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
            return Begin(lsn, pg_time(ts), xid)
        if kind == 67:  # 'C'
            flags, lsn, end, ts = _COMMIT.unpack_from(buf, 1)
            return Commit(flags, lsn, end, pg_time(ts))
        if kind == 85:  # 'U'
            return self._update(buf)
        if kind == 68:  # 'D'
            (oid,) = _I.unpack_from(buf, 1)
            old, _ = tuple_data(buf, 6)
            return Delete(self.relation(oid), old, chr(buf[5]))
        if kind == 82:  # 'R'
            return self._relation(buf)
        if kind == 89:  # 'Y'
            (oid,) = _I.unpack_from(buf, 1)
            namespace, pos = _cstring(buf, 5)
            name, _ = _cstring(buf, pos)
            typ = Type(oid, namespace, name)
            self.types[oid] = typ
            return typ
        if kind == 84:  # 'T'
            count, options = _TRUNC_HEAD.unpack_from(buf, 1)
            oids = struct.unpack_from(f">{count}I", buf, 6)
            return Truncate(tuple(self.relation(o) for o in oids), bool(options & 1), bool(options & 2))
        if kind == 77:  # 'M'
            flags, lsn = _MSG_HEAD.unpack_from(buf, 1)
            prefix, pos = _cstring(buf, 10)
            (size,) = _I.unpack_from(buf, pos)
            return Message(bool(flags & 1), lsn, prefix, buf[pos + 4:pos + 4 + size])
        if kind == 79:  # 'O'
            (lsn,) = _Q.unpack_from(buf, 1)
            name, _ = _cstring(buf, 9)
            return Origin(lsn, name)
        raise ProtocolError(f"unknown pgoutput message type {chr(kind)!r}")

    def _update(self, buf: bytes) -> Update:
        (oid,) = _I.unpack_from(buf, 1)
        marker = chr(buf[5])
        old: TupleData | None = None
        old_kind: str | None = None
        pos = 6
        if marker in ("K", "O"):
            old_kind = marker
            old, pos = tuple_data(buf, 6)
            marker = chr(buf[pos])
            pos += 1
        if marker != "N":
            raise ProtocolError(f"update without a new tuple (marker {marker!r})")
        new, _ = tuple_data(buf, pos)
        return Update(self.relation(oid), new, old, old_kind)

    def _relation(self, buf: bytes) -> Relation:
        (oid,) = _REL_HEAD.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (count,) = _H.unpack_from(buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(count):
            flags = buf[pos]
            col_name, pos = _cstring(buf, pos + 1)
            type_oid, typmod = _COL_TAIL.unpack_from(buf, pos)
            pos += 8
            columns.append(Column(bool(flags & 1), col_name, type_oid, typmod))
        rel = Relation(oid, namespace, name, identity, tuple(columns))
        self.relations[oid] = rel
        return rel
