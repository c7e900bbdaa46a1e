"""Capture gaps in the database (rewind.gap) and the stream's slot, as `rewind status` reports them.

The stream writes each gap to the mirror first (with its checkpoint) and then here, so that the
database itself says what its journal is missing; see journal/sql/schema_0004.sql.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from journal.connection import connect
from journal.pgoutput import format_lsn
from journal.replication import default_slot_name

if TYPE_CHECKING:  # journal.mirror imports journal.tracking, which imports this module
    from journal.mirror.store import Gap

__all__ = ["GapRecord", "SlotStatus", "capture_check", "gaps_between", "has_gap_table", "list_gaps", "record_gaps",
           "slot_status"]

# Idempotent: a replay after a crash between the mirror commit and this insert adds nothing.
_RECORD = """
INSERT INTO rewind.gap (kind, xid, table_name, changes, complete, at, start_lsn, end_lsn, start_time,
                        end_time, detail, images)
VALUES (%s, %s, %s, %s, %s, %s, %s::pg_lsn, %s::pg_lsn, %s, %s, %s, %s)
ON CONFLICT (kind, end_lsn, coalesce(table_name, '')) DO NOTHING
"""

_LIST = """
SELECT kind, xid, table_name, changes, complete, at, detail, id, adopted_tx
FROM rewind.gap
WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s) AND (%(until)s::timestamptz IS NULL OR at <= %(until)s)
ORDER BY at DESC, id DESC
"""

# Lag in seconds: the age of the oldest journaled change past the slot's confirmed position, by
# the time recorded with it (its statement's start, so a little over the true lag); 0 when
# nothing journaled waits. change.pos is a WAL position, comparable with confirmed_flush_lsn.
_SLOT = """
SELECT s.slot_name, s.active, (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint,
       extract(epoch FROM now() - (SELECT min(c.at) FROM rewind.change c
                                   WHERE c.pos > (s.confirmed_flush_lsn - '0/0')::bigint))::float8
FROM pg_replication_slots s
WHERE s.slot_name = %s AND s.database = current_database()
"""


@dataclass(frozen=True)
class GapRecord:
    kind: str  # bypass | slot_reset
    xid: str | None
    table: str | None
    changes: int | None
    complete: bool
    at: datetime
    detail: dict[str, Any] | None
    id: int | None = None  # in rewind.gap (`rewind adopt`); None when read from the mirror
    adopted_as: int | None = None  # the action its images were journaled as

    @property
    def misfiled(self) -> bool:
        """Journal rows filed under another transaction's record (journal.bypass.find_misfiled)."""
        return bool((self.detail or {}).get("misfiled"))

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "xid": self.xid, "table": self.table, "changes": self.changes,
                "complete": self.complete, "at": self.at.isoformat(), "detail": self.detail, "id": self.id,
                "adopted_as": self.adopted_as}

    def describe(self) -> str:
        if self.kind == "slot_reset":
            return f"slot reset at {self.at:%Y-%m-%d %H:%M:%S%z}: {(self.detail or {}).get('reason', '')}"
        ref = f"gap {self.id}: " if self.id is not None else ""
        detail = self.detail or {}
        if self.misfiled:
            return (f"{ref}misfiled at {self.at:%Y-%m-%d %H:%M:%S%z}: xid {self.xid} filed {self.changes} journal "
                    f"row(s) under action(s) {', '.join(map(str, detail.get('filed_under', [])))}, not under a "
                    "record of its own: who wrote them is unknown (the session set rewind.tx)")
        identity = detail.get("identity", "")
        images = "complete images" if self.complete else f"incomplete images ({identity})"
        adopted = f"; adopted as action {self.adopted_as}" if self.adopted_as is not None else ""
        return (f"{ref}bypass at {self.at:%Y-%m-%d %H:%M:%S%z}: {self.changes} change(s) to {self.table} in xid "
                f"{self.xid} went around the triggers; {images}{adopted}")


@dataclass(frozen=True)
class SlotStatus:
    name: str
    active: bool
    lag_bytes: int
    lag_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "active": self.active, "lag_bytes": self.lag_bytes,
                "lag_seconds": self.lag_seconds}


def record_gaps(db: psycopg.Connection[Any], gaps: list[Gap]) -> None:
    if not gaps:
        return
    with db.cursor() as cur:
        cur.executemany(_RECORD, [
            (g.kind, g.xid, g.table_name, g.changes, g.complete, g.at,
             format_lsn(g.start_lsn) if g.start_lsn is not None else None, format_lsn(g.end_lsn or 0),
             g.start_time, g.end_time, Jsonb(g.detail) if g.detail is not None else None,
             Jsonb(g.images) if g.images is not None else None) for g in gaps])


def has_gap_table(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('rewind.gap') IS NOT NULL").fetchone()
    return bool(row and row[0])


def list_gaps(conn: psycopg.Connection[Any], since: datetime | None = None,
              until: datetime | None = None) -> list[GapRecord]:
    """Newest first; none before revision 0004."""
    if not has_gap_table(conn):
        return []
    return [GapRecord(kind=r[0], xid=r[1], table=r[2], changes=r[3], complete=r[4], at=r[5],
                      detail=r[6] if not isinstance(r[6], str) else json.loads(r[6]), id=r[7], adopted_as=r[8])
            for r in conn.execute(_LIST, {"since": since, "until": until})]


def slot_status(conn: psycopg.Connection[Any], slot: str | None = None) -> SlotStatus | None:
    """The stream's slot (default rewind_<database>) in this database, or None."""
    name = slot or default_slot_name(conn.info.dbname)
    row = conn.execute(_SLOT, (name,)).fetchone()
    if row is None:
        return None
    return SlotStatus(name=row[0], active=bool(row[1]), lag_bytes=max(0, int(row[2] or 0)),
                      lag_seconds=max(0.0, float(row[3] or 0.0)))


def gaps_between(dsn: str, since: datetime | None = None, until: datetime | None = None) -> list[GapRecord]:
    with connect(dsn) as conn:
        return list_gaps(conn, since, until)


def capture_check(gaps: list[GapRecord], slot: SlotStatus | None, *, max_lag_bytes: int | None = None,
                  max_lag_seconds: float | None = None) -> list[str]:
    """Why `rewind status --check` fails: any gap, or lag beyond a limit; empty when healthy.
    Without a slot there is no lag to judge."""
    failures = []
    if gaps:
        kinds = sorted({g.kind for g in gaps})
        failures.append(f"{len(gaps)} capture gap(s) ({', '.join(kinds)})")
    if slot is not None and max_lag_bytes is not None and slot.lag_bytes > max_lag_bytes:
        failures.append(f"slot {slot.name} lags {slot.lag_bytes} bytes (limit {max_lag_bytes})")
    if slot is not None and max_lag_seconds is not None and slot.lag_seconds > max_lag_seconds:
        failures.append(f"slot {slot.name} lags {slot.lag_seconds:.1f} s (limit {max_lag_seconds:g})")
    return failures
