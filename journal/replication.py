"""The logical replication slot and the pgoutput stream of one database.

psycopg 3 has no replication protocol support, so the stream alone goes through psycopg2's
``LogicalReplicationConnection``; slot management, lag and everything else use ordinary psycopg 3
connections (slots can be created and dropped with SQL functions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import psycopg2
import psycopg2.extras
import psycopg2.sql
from psycopg.conninfo import make_conninfo

from journal.connection import parse_dsn
from journal.errors import BadInput
from journal.pgoutput import parse_lsn

__all__ = ["JOURNAL_PUBLICATIONS", "SESSION_SETTINGS", "TABLES_PUBLICATION", "SlotInfo", "check_slot_owner",
           "create_slot", "default_slot_name", "drop_slot", "ensure_slot", "exported_snapshot_slot", "open_stream",
           "slot_info"]

# What the sidecar consumes today: the journal and the tracked-table catalog.
JOURNAL_PUBLICATIONS: Final = ("rewind_journal", "rewind_tracked")
# The tracked user tables (bypass detection, stream mode); kept in sync by track/untrack.
TABLES_PUBLICATION: Final = "rewind_tables"

# pgoutput renders every value with the walsender's own session settings, so without these the
# mirror's text would depend on the server's defaults and on whoever configured the role:
# ISO dates and UTC, so timestamps read back the same everywhere and compare as text; the
# postgres interval style, which is what the journal's own readers parse; extra_float_digits=3 so
# that floats round-trip exactly; UTF8 because the decoder decodes UTF-8.
SESSION_SETTINGS: Final = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "TimeZone": "UTC",
    "client_encoding": "UTF8",
    "bytea_output": "hex",
}

_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


def default_slot_name(dbname: str) -> str:
    """rewind_<database>, folded to what a slot name may hold (a-z, 0-9, _; at most 63 chars)."""
    return ("rewind_" + _SLOT_CHARS.sub("_", dbname.lower()))[:63]


def check_slot_name(name: str) -> str:
    if not name or len(name) > 63 or _SLOT_CHARS.search(name):
        raise BadInput(f"bad slot name {name!r}: use at most 63 of a-z, 0-9 and _")
    return name


@dataclass(frozen=True)
class SlotInfo:
    name: str
    database: str
    plugin: str | None
    active: bool
    confirmed_lsn: int | None
    restart_lsn: int | None
    current_lsn: int

    @property
    def lag_bytes(self) -> int:
        return max(0, self.current_lsn - (self.confirmed_lsn or 0))


_SLOT = """
SELECT s.slot_name, s.database, s.plugin, s.active, s.confirmed_flush_lsn::text, s.restart_lsn::text,
       pg_current_wal_lsn()::text
FROM pg_replication_slots s WHERE s.slot_name = %s
"""


def slot_info(conn: psycopg.Connection[Any], slot: str) -> SlotInfo | None:
    row = conn.execute(_SLOT, (slot,)).fetchone()
    if row is None:
        return None
    return SlotInfo(name=row[0], database=row[1], plugin=row[2], active=row[3],
                    confirmed_lsn=parse_lsn(row[4]) if row[4] else None,
                    restart_lsn=parse_lsn(row[5]) if row[5] else None, current_lsn=parse_lsn(row[6]))


def create_slot(conn: psycopg.Connection[Any], slot: str) -> int:
    """Create the pgoutput slot; returns its consistent point (where its stream starts)."""
    row = conn.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
                       (slot,)).fetchone()
    assert row is not None
    return parse_lsn(row[0])


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def ensure_slot(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Create the slot unless it exists; True when created. A slot of the same name that belongs
    to another database or plugin is someone else's: refuse rather than consume it."""
    info = slot_info(conn, slot)
    if info is None:
        create_slot(conn, slot)
        return True
    check_slot_owner(info, conn.info.dbname)
    return False


def check_slot_owner(info: SlotInfo, dbname: str) -> None:
    if info.database != dbname or info.plugin != "pgoutput":
        raise BadInput(f"replication slot {info.name} exists for database {info.database} with plugin "
                       f"{info.plugin}; choose another --slot")


def _replication_conninfo(dsn: str) -> str:
    info = parse_dsn(dsn)
    settings = " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())
    info["options"] = f"{info.get('options') or ''} {settings}".strip()
    info.setdefault("application_name", "rewind-stream")
    info.setdefault("connect_timeout", 10)
    return make_conninfo("", **info)


@contextmanager
def exported_snapshot_slot(dsn: str, slot: str, *, temporary: bool = False) -> Iterator[tuple[int, str]]:
    """Create the slot through the replication protocol, which exports the snapshot of its
    consistent point: (consistent point, snapshot name). Reading the database in that snapshot
    (SET TRANSACTION SNAPSHOT) sees exactly what committed before the slot's first change, so a
    copy made in it and the stream from the slot meet without gap or overlap. The snapshot lives
    while this connection stays idle, i.e. inside the with block; a temporary slot, only as long."""
    conn = psycopg2.connect(_replication_conninfo(dsn),
                            connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.execute(psycopg2.sql.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
            psycopg2.sql.Identifier(check_slot_name(slot)), psycopg2.sql.SQL("TEMPORARY" if temporary else "")))
        row = cur.fetchone()
        assert row is not None
        yield parse_lsn(row[1]), str(row[2])
    finally:
        conn.close()


class Stream:
    """One START_REPLICATION session on a psycopg2 replication connection."""

    def __init__(self, dsn: str, slot: str, *, start_lsn: int, publications: tuple[str, ...],
                 status_interval: float = 10.0) -> None:
        self.conn = psycopg2.connect(_replication_conninfo(dsn),
                                     connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            self.cursor: psycopg2.extras.ReplicationCursor = self.conn.cursor()
            self.cursor.start_replication(
                slot_name=slot, decode=False, start_lsn=start_lsn, status_interval=status_interval,
                options={"proto_version": "1", "publication_names": ",".join(publications),
                         "messages": "true"})
        except BaseException:
            self.conn.close()
            raise

    def fileno(self) -> int:
        return int(self.conn.fileno())

    def confirm(self, lsn: int, *, reply: bool = False) -> None:
        """Tell the server everything up to lsn is stored: the slot may then release that WAL."""
        self.cursor.send_feedback(write_lsn=lsn, flush_lsn=lsn, apply_lsn=lsn, reply=reply, force=True)

    @property
    def wal_end(self) -> int:
        return int(self.cursor.wal_end)

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()


def open_stream(dsn: str, slot: str, *, start_lsn: int, publications: tuple[str, ...] = JOURNAL_PUBLICATIONS,
                status_interval: float = 10.0) -> Stream:
    return Stream(dsn, slot, start_lsn=start_lsn, publications=publications, status_interval=status_interval)
