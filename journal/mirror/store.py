"""Opening the mirror, upgrading its schema, and writing a batch of the stream in one transaction.

The mirror is any SQLAlchemy URL: an SQLite file by default (nothing to run), PostgreSQL in
production (another server than the one it protects: the point is to survive DROP DATABASE).
A batch and the stream's checkpoint are committed together, and the stream confirms a position
to the slot only after that commit, so after a crash the mirror and its checkpoint agree and the
replay from the slot starts exactly where the mirror stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine, Table, create_engine, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from journal.connection import mask_dsn, mask_text
from journal.errors import BadInput
from journal.mirror import tables

TX_COLUMNS = tuple(c.name for c in tables.tx.columns)
CHANGE_COLUMNS = tuple(c.name for c in tables.change.columns)
DDL_COLUMNS = tuple(c.name for c in tables.ddl.columns)
TRACKED_COLUMNS = tuple(c.name for c in tables.tracked.columns)


def iso_utc(text: str | None) -> str | None:
    """A timestamptz as PostgreSQL writes it under TimeZone=UTC, in the mirror's fixed width."""
    if text is None:
        return None
    if _MIRROR_TIME.match(text):  # already in it (most are): no parse
        return text
    return datetime.fromisoformat(text).astimezone(UTC).isoformat(timespec="microseconds")


_MIRROR_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00\Z")


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Gap:
    kind: str  # bypass | slot_reset
    complete: bool
    at: str
    xid: str | None = None
    table_name: str | None = None
    changes: int | None = None
    start_lsn: int | None = None
    end_lsn: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    detail: dict[str, Any] | None = None
    images: list[dict[str, Any]] | None = None  # a bypass's rows as WAL carried them

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "complete": self.complete, "at": self.at, "xid": self.xid,
                "table_name": self.table_name, "changes": self.changes, "start_lsn": self.start_lsn,
                "end_lsn": self.end_lsn, "start_time": self.start_time, "end_time": self.end_time,
                "detail": json.dumps(self.detail) if self.detail is not None else None,
                "images": json.dumps(self.images) if self.images is not None else None}


@dataclass
class Batch:
    """Rows in the mirror's column order (TX_COLUMNS, CHANGE_COLUMNS, ...); values may be the
    stream's text, which both backends store by column type without Python converting them."""

    txs: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    ddls: list[tuple[Any, ...]] = field(default_factory=list)
    tracked: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # upserts by id
    gaps: list[Gap] = field(default_factory=list)
    lsn: int = 0  # the checkpoint this batch moves to

    def __bool__(self) -> bool:
        return bool(self.txs or self.changes or self.ddls or self.tracked or self.gaps)


def default_journal_url(dsn: str) -> str:
    """An SQLite file in the current directory, named after the database it mirrors."""
    try:
        dbname = conninfo_to_dict(dsn).get("dbname") or "postgres"
    except psycopg.ProgrammingError:
        dbname = "postgres"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(dbname))
    return "sqlite:///" + str(Path(f"rewind-journal-{safe}.sqlite").absolute())


def normalize_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (the COPY path needs it), whatever else is installed."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(f"malformed journal URL {mask_dsn(url)}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (rewind actions --journal) never block the stream's writes, nor it theirs.
    # synchronous=FULL: the stream tells the slot to drop WAL once the mirror has committed, so a
    # commit must survive a power loss too, not only a crash of the process (which NORMAL would
    # cover); batches make that one fsync per batch (about 8 ms here; 40 per 200,000 changes).
    # case_sensitive_like: actor globs match case-sensitively, as on PostgreSQL.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA case_sensitive_like=ON")
    cur.close()


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("journal.mirror").joinpath("migrations")))
    return cfg


class MirrorStore:
    """One mirror database. upgrade=True (the writer) brings its schema to head first."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = normalize_url(url)
        try:
            self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise BadInput(f"unusable journal URL {mask_dsn(url)}: {exc}") from None
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        path = self.engine.url.database if self.is_sqlite else None
        if not upgrade and path and path != ":memory:" and not Path(path).exists():
            raise BadInput(f"no rewind journal mirror at {mask_dsn(url)}")  # a reader creates no file
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if upgrade:
                self.upgrade()
            else:
                with self.engine.connect() as conn:
                    if not self.engine.dialect.has_table(conn, tables.checkpoint.name):
                        raise BadInput(f"no rewind journal mirror at {mask_dsn(url)}")
        except SQLAlchemyError as exc:
            self.engine.dispose()
            orig = getattr(exc, "orig", None)
            reason = " ".join(mask_text(str(orig if orig is not None else exc), url).split())
            raise BadInput(f"cannot open journal {mask_dsn(url)}: {reason}") from None
        self._bulk_sql = {t.name: self._bulk_statement(t) for t in (tables.tx, tables.change, tables.ddl,
                                                                    tables.tracked)}

    def _bulk_statement(self, table: Table) -> str | sql.Composed:
        """executemany's INSERT for SQLite (qmark, compiled by SQLAlchemy), COPY for PostgreSQL."""
        if self.is_sqlite:
            return str(insert(table).compile(dialect=self.engine.dialect))
        return sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns))

    def upgrade(self) -> None:
        with self.engine.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    def checkpoint(self, database: str) -> int | None:
        """The LSN the mirror holds everything up to. Over all slots: LSNs are positions in the
        cluster's one WAL, so a stream through a new slot (renamed, recreated) skips what another
        slot already brought. A mirror of another database is refused rather than mixed."""
        cp = tables.checkpoint.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(cp.database, func.max(cp.confirmed_lsn)).group_by(cp.database)).all()
        others = [r[0] for r in rows if r[0] != database]
        if others:
            raise BadInput(f"the journal at {mask_dsn(self.url)} mirrors database {others[0]}, not {database}")
        return int(rows[0][1]) if rows else None

    def gap_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tables.gap)).scalar() or 0)

    def last_commit_time(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(tables.tx.c.committed_at))).scalar()

    def write(self, batch: Batch, *, slot: str, database: str) -> None:
        """Everything in the batch and the checkpoint, in one transaction."""
        self.write_all([batch], slot=slot, database=database, lsn=batch.lsn)

    def write_all(self, batches: Iterable[Batch], *, slot: str, database: str, lsn: int) -> None:
        """Several batches (read lazily) and then the checkpoint, in one transaction."""
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            cur = raw.cursor()
            try:
                for batch in batches:
                    if batch.tracked:
                        conn.execute(tables.tracked.delete().where(tables.tracked.c.id.in_(list(batch.tracked))))
                    for table, rows in ((tables.tx, batch.txs), (tables.change, batch.changes),
                                        (tables.ddl, batch.ddls), (tables.tracked, list(batch.tracked.values()))):
                        if rows:
                            self._bulk(cur, table.name, rows)
                    for gap in batch.gaps:
                        conn.execute(insert(tables.gap).values(**gap.row()))
            finally:
                cur.close()
            cp = tables.checkpoint
            values = {"database": database, "confirmed_lsn": lsn, "updated_at": now_text()}
            if conn.execute(cp.update().where(cp.c.slot == slot).values(**values)).rowcount == 0:
                conn.execute(insert(cp).values(slot=slot, **values))

    def _bulk(self, cur: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
        if self.is_sqlite:
            cur.executemany(self._bulk_sql[table], rows)
            return
        with cur.copy(self._bulk_sql[table]) as copy:
            write = copy.write_row
            for row in rows:
                write(row)
