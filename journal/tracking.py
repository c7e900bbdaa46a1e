"""Choosing which tables are journaled, and reporting what is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from journal.connection import connect
from journal.errors import BadInput
from journal.gaps import GapRecord, SlotStatus, list_gaps, slot_status
from journal.replication import check_slot_name, default_slot_name, ensure_slot
from journal.schema import current_revision, require_installed

_USER_TABLES = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('rewind', 'information_schema') AND n.nspname !~ '^pg_'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
ORDER BY 2, 3
"""

_STATUS = """
SELECT t.id, t.schema_name, t.table_name, t.key_columns, t.mode, t.tracked_at,
       (SELECT count(*) FROM rewind.change c WHERE c.tbl = t.id) AS changes
FROM rewind.tracked t
WHERE t.untracked_at IS NULL AND t.dropped_at IS NULL
ORDER BY t.schema_name, t.table_name
"""


@dataclass(frozen=True)
class TrackedTable:
    id: int
    table: str  # schema.table, unquoted
    key_columns: list[str]
    mode: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "table": self.table, "key": self.key_columns, "mode": self.mode}


def split_name(name: str, *, fold: bool = True) -> tuple[str, str]:
    """'schema.table' (either part may be double-quoted) into its parts; default schema public.
    Unquoted parts fold to lower case, as PostgreSQL folds them (fold=False keeps them as typed:
    the fallback for a name copied from Rewind's own output, where names appear unquoted)."""
    parts: list[str] = []
    buf, quoted, i = "", False, 0
    while i < len(name):
        ch = name[i]
        if ch == '"':
            if quoted and i + 1 < len(name) and name[i + 1] == '"':
                buf += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(buf)
            buf = ""
        else:
            buf += ch.lower() if fold and not quoted else ch
        i += 1
    parts.append(buf)
    if quoted or len(parts) > 2 or not all(parts):
        raise BadInput(f"malformed table name: {name}")
    return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])


T = TypeVar("T")


def find_by_name(name: str, find: Callable[[str, str], T | None]) -> T | None:
    """find(schema, table) for what a name may mean, folded as PostgreSQL folds it, then as typed
    (a name copied from Rewind's output, where names appear unquoted); the first that is found."""
    for schema, table in dict.fromkeys((split_name(name), split_name(name, fold=False))):
        found = find(schema, table)
        if found:
            return found
    return None


def resolve_table(conn: psycopg.Connection, name: str) -> int:
    """The oid of an existing table or partitioned table, or BadInput."""
    row = find_by_name(name, lambda schema, table: conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", (schema, table)).fetchone())
    schema, table = split_name(name)
    if row is None:
        raise BadInput(f"unknown table: {schema}.{table}")
    return int(row[0])


MODES = ("journal", "stream")

# Why a table cannot be captured from WAL: generated columns are not in pgoutput's rows before
# PostgreSQL 18, and rows written through an inheritance parent are decoded as its children's,
# which are not tracked.
_STREAM_BLOCKERS = """
SELECT c.oid::regclass::text,
       (SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''),
       c.relkind <> 'p' AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)
FROM pg_class c WHERE c.oid = %s
"""


def track(dsn: str, tables: list[str] | None = None, *, schemas: list[str] | None = None,
          all_schemas: bool = False, mode: str | None = None, slot: str | None = None) -> list[TrackedTable]:
    """Attach capture triggers. Schemas given with --schema/--all are remembered, so tables
    created there later are tracked by the DDL event trigger (in journal mode).

    mode None keeps the mode of tables tracked already (journal for new ones); 'stream' or
    'journal' switches. Stream mode needs the decoding stream: the slot (default rewind_<database>)
    is created here if missing, so WAL is kept for `rewind serve` from this moment on."""
    if not tables and not schemas and not all_schemas:
        raise BadInput("nothing to track: name tables, or pass --schema or --all")
    if mode is not None and mode not in MODES:
        raise BadInput(f"unknown mode {mode!r}: use journal or stream")
    with connect(dsn) as conn:
        require_installed(conn)
        oids = [resolve_table(conn, t) for t in tables or []]
        wanted_schemas = list(schemas or [])
        if all_schemas:
            wanted_schemas += [r[0] for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('rewind', 'information_schema') "
                "AND nspname !~ '^pg_' ORDER BY 1")]
        for s in wanted_schemas:
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (s,)).fetchone() is None:
                raise BadInput(f"unknown schema: {s}")
            oids += [r[0] for r in conn.execute(_USER_TABLES, {"schema": s})]
        oids = list(dict.fromkeys(oids))
        if mode == "stream":
            _check_streamable(conn, oids)
            slot_name = check_slot_name(slot) if slot else default_slot_name(conn.info.dbname)
        with conn.transaction():
            for s in wanted_schemas:
                conn.execute("INSERT INTO rewind.tracked_schema (schema_name) VALUES (%s) "
                             "ON CONFLICT DO NOTHING", (s,))
            for oid in oids:
                conn.execute("SELECT rewind.track(%s::oid::regclass)", (oid,))
                if mode is not None:
                    conn.execute("SELECT rewind.set_mode(%s::oid::regclass, %s)", (oid, mode))
            sync_publication(conn)
        if mode == "stream":
            ensure_slot(conn, slot_name)
        return _tracked(conn)


def _check_streamable(conn: psycopg.Connection, oids: list[int]) -> None:
    """BadInput, before anything changes, for what stream mode cannot capture."""
    level = conn.execute("SHOW wal_level").fetchone()
    if not level or level[0] != "logical":
        raise BadInput(f"stream mode needs wal_level = logical (the server has {level[0] if level else '?'}); "
                       "use --mode journal")
    for oid in oids:
        row = conn.execute(_STREAM_BLOCKERS, (oid,)).fetchone()
        assert row is not None
        name, generated, parent = row
        if generated:
            raise BadInput(f"stream mode cannot capture {name}: WAL does not carry its generated columns "
                           f"({generated}); use --mode journal")
        if parent:
            raise BadInput(f"stream mode cannot capture {name}: it has inheritance children, whose rows WAL "
                           "names by the child; use --mode journal")


def untrack(dsn: str, tables: list[str] | None = None, *, schemas: list[str] | None = None,
            all_schemas: bool = False) -> list[TrackedTable]:
    """Detach capture triggers; the journal already written is kept."""
    if not tables and not schemas and not all_schemas:
        raise BadInput("nothing to untrack: name tables, or pass --schema or --all")
    with connect(dsn) as conn:
        require_installed(conn)
        oids = [resolve_table(conn, t) for t in tables or []]
        with conn.transaction():
            if all_schemas:
                conn.execute("DELETE FROM rewind.tracked_schema")
                oids += [r[0] for r in conn.execute(
                    "SELECT relid FROM rewind.tracked WHERE untracked_at IS NULL AND dropped_at IS NULL")]
            for s in schemas or []:
                conn.execute("DELETE FROM rewind.tracked_schema WHERE schema_name = %s", (s,))
                oids += [r[0] for r in conn.execute(
                    "SELECT relid FROM rewind.tracked WHERE schema_name = %s "
                    "AND untracked_at IS NULL AND dropped_at IS NULL", (s,))]
            for oid in dict.fromkeys(oids):
                conn.execute("SELECT rewind.untrack(%s::oid::regclass)", (oid,))
            sync_publication(conn)
        return _tracked(conn)


def sync_publication(conn: psycopg.Connection) -> None:
    """Make the rewind_tables publication list exactly the tracked tables that can be published
    (see journal/sql/publications.sql); a schema from before revision 0002 has none to sync."""
    row = conn.execute("SELECT to_regprocedure('rewind.sync_tables_publication()') IS NOT NULL").fetchone()
    if row and row[0]:
        conn.execute("SELECT rewind.sync_tables_publication()")


def _tracked(conn: psycopg.Connection) -> list[TrackedTable]:
    return [TrackedTable(id=r[0], table=f"{r[1]}.{r[2]}", key_columns=list(r[3]), mode=r[4])
            for r in conn.execute(_STATUS)]


@dataclass(frozen=True)
class Status:
    revision: str | None
    tables: list[TrackedTable]
    schemas: list[str]
    untracked: list[str]  # user tables that no trigger journals
    changes: int
    actions: int
    slot: SlotStatus | None = None  # the decoding stream's slot, None when there is none
    gaps: list[GapRecord] = field(default_factory=list)  # what the journal misses, newest first
    # The server keeps commit timestamps (track_commit_timestamp), so commit times are known
    # without the sidecar's stamps (restore --to, see rewind.commit_time).
    commit_timestamps: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "tables": [t.as_json() for t in self.tables],
                "schemas": self.schemas, "untracked": self.untracked,
                "changes": self.changes, "actions": self.actions,
                "slot": self.slot.as_json() if self.slot else None, "gaps": [g.as_json() for g in self.gaps],
                "commit_timestamps": self.commit_timestamps}


def status(dsn: str, *, slot: str | None = None, gaps_since: datetime | None = None) -> Status:
    """What is tracked, the stream's slot (default name rewind_<database>) and the capture gaps
    recorded since gaps_since (all when None)."""
    with connect(dsn) as conn:
        require_installed(conn)
        tables = _tracked(conn)
        schemas = [r[0] for r in conn.execute("SELECT schema_name FROM rewind.tracked_schema ORDER BY 1")]
        tracked_names = {t.table for t in tables}
        untracked = [f"{r[1]}.{r[2]}" for r in conn.execute(_USER_TABLES, {"schema": None})
                     if f"{r[1]}.{r[2]}" not in tracked_names]
        changes, actions, commit_ts = conn.execute(
            "SELECT (SELECT count(*) FROM rewind.change), (SELECT count(*) FROM rewind.tx), "
            "current_setting('track_commit_timestamp')::boolean").fetchone()  # type: ignore[misc]
        return Status(revision=current_revision(conn), tables=tables, schemas=schemas,
                      untracked=untracked, changes=changes, actions=actions, slot=slot_status(conn, slot),
                      gaps=list_gaps(conn, gaps_since), commit_timestamps=commit_ts)


def tracked_ids(conn: psycopg.Connection, names: list[str]) -> list[int]:
    """Tracked ids for table names (tracked now or once); BadInput for a table never tracked."""
    ids = []
    for name in names:
        rows = find_by_name(name, lambda schema, table: conn.execute(
            "SELECT id FROM rewind.tracked WHERE schema_name = %s AND table_name = %s", (schema, table)).fetchall())
        schema, table = split_name(name)
        if not rows:
            raise BadInput(f"unknown table: {schema}.{table} (not tracked)")
        ids += [r[0] for r in rows]
    return ids
