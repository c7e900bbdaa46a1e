"""The decoding stream: the database's pgoutput slot, mirrored into the journal store.

What it guarantees, and how:
- Every journaled transaction reaches the mirror exactly once. Rows are written in batches of
  whole transactions together with the checkpoint (the end LSN of the last one), and the slot is
  told a position only after that commit. After a crash the slot replays from the position it
  was told; transactions whose commit is below the mirror's checkpoint are skipped, so a replay
  writes nothing twice ((commit LSN, position in transaction) is also the mirror's primary key).
- Every journaled transaction in the database gets its commit LSN and commit time
  (rewind.tx.commit_lsn/committed_at), stamped after the mirror commit. rewind.tx is published
  for inserts only, so these updates do not come back through the stream.
- An idle database does not pin WAL: with nothing pending, the stream confirms the server's WAL
  end every heartbeat, and when even that does not move, emits a non-transactional
  'rewind.heartbeat' message to have something to confirm.
- A write to a tracked table that went around the triggers (disabled triggers,
  session_replication_role = replica) is recorded as a bypass gap with the row images WAL carries
  (journal/bypass.py): the stream also reads the tracked tables' own changes (rewind_tables).
  Gaps go to the mirror with their batch and then to rewind.gap in the database (idempotent), so
  `rewind status` shows them either way.
- A stream too far behind (max_lag_bytes) drops and recreates its slot and writes a slot_reset gap
  naming the LSN range and time span it lost, instead of letting WAL fill the disk.
- A restart of PostgreSQL, a dropped connection or a failing mirror ends the session; the next one
  starts from the last confirmed position after a backoff, losing nothing.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Final

import psycopg
import psycopg2
from psycopg import sql
from sqlalchemy.exc import SQLAlchemyError

from journal.bypass import DecodedRow, find_bypasses, find_misfiled
from journal.connection import connect, mask_dsn, mask_text
from journal.errors import BadInput, RewindError
from journal.gaps import has_gap_table, record_gaps
from journal.ingest import CONTEXT_PREFIX, StreamTx, ingest_or_report, prepare
from journal.mirror.store import TRACKED_COLUMNS, Batch, Gap, MirrorStore, iso_utc, now_text
from journal.pgoutput import (
    Begin,
    Decoder,
    Message,
    Relation,
    Truncate,
    TupleData,
    Update,
    format_lsn,
    parse_lsn,
    tuple_data,
)
from journal.replication import (
    JOURNAL_PUBLICATIONS,
    SESSION_SETTINGS,
    TABLES_PUBLICATION,
    Stream,
    check_slot_name,
    check_slot_owner,
    create_slot,
    default_slot_name,
    drop_slot,
    ensure_slot,
    exported_snapshot_slot,
    open_stream,
    slot_info,
)
from journal.schema import require_installed
from journal.tracking import sync_publication

__all__ = ["StreamStats", "Streamer", "create_stream_slot"]

log = logging.getLogger("rewind.stream")

HEARTBEAT_PREFIX: Final = "rewind.heartbeat"
TRUNCATE_PREFIX: Final = "rewind.truncate"  # capture_truncate of an empty table: nothing to journal

_OID = struct.Struct(">I")
_COMMIT_END = struct.Struct(">q")  # a Commit's end LSN: after its kind, flags and commit LSN
# After reading what had arrived, a busy stream waits this long before reading again: one wake-up
# per message arrival (a commit's worth, under OLTP) would cost a context switch each, on the cores
# the database needs; at most this much is added to the lag. Unless reading took that long itself:
# then the stream is behind (a backlog, a burst), and a pause would only let the socket's buffer
# fill and stop the walsender, which decodes faster than the stream journals.
_DRAIN_PAUSE: Final = 0.01

# Stamped in batches by primary key; only rows not already stamped, so a replay rewrites nothing.
_STAMP_COMMITS = """
UPDATE rewind.tx t SET commit_lsn = v.lsn::pg_lsn, committed_at = v.at
FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS v(id, lsn, at)
WHERE t.id = v.id AND t.commit_lsn IS DISTINCT FROM v.lsn::pg_lsn
"""

# The journal as it stands, for a new mirror; text as the stream renders it (see SESSION_SETTINGS).
_COPY_TX = """
SELECT id, xid::text, actor, role, application, client_addr::text, pid, run, started_at::text,
       commit_lsn::text, committed_at::text
FROM rewind.tx ORDER BY id
"""
_COPY_CHANGES = """
SELECT c.id, c.pos, c.tx, c.tbl, k.schema_name || '.' || k.table_name, c.op::text, c.before::text,
       c.after::text, c.at::text
FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl
"""
_COPY_DDL = """
SELECT d.id, d.tx, d.tbl, k.schema_name || '.' || k.table_name, d.command, d.object_type, d.object_identity,
       d.at::text
FROM rewind.ddl d LEFT JOIN rewind.tracked k ON k.id = d.tbl
"""

_TRACKED = """
SELECT id, relid, schema_name, table_name, key_columns, mode, tracked_at::text, untracked_at::text,
       dropped_at::text
FROM rewind.tracked
"""

_RETRYABLE = (psycopg2.Error, psycopg.Error, SQLAlchemyError, OSError, RewindError)


@dataclass(frozen=True)
class StreamStats:
    """A snapshot for /readyz and /metrics; counters count since this Streamer started, except
    gaps_total, which counts every gap the mirror holds."""

    ready: bool = False  # the slot exists and the stream is running
    changes_total: int = 0
    transactions_total: int = 0
    lag_bytes: int | None = None  # pg_current_wal_lsn() - the slot's confirmed position
    lag_seconds: float | None = None  # how old the newest confirmed commit was when confirmed; 0 idle
    gaps_total: int = 0
    last_commit_time: datetime | None = None
    mirror_errors_total: int = 0


def parse_text_array(text: str) -> list[str]:
    """A one-dimensional text[] in PostgreSQL's output syntax ({a,"b c"}), as a list."""
    inner = text[1:-1]
    out: list[str] = []
    i, n = 0, len(inner)
    while i < n:
        if inner[i] == '"':
            i += 1
            buf = []
            while inner[i] != '"':
                if inner[i] == "\\":
                    i += 1
                buf.append(inner[i])
                i += 1
            out.append("".join(buf))
            i += 2  # closing quote and comma
        else:
            end = inner.find(",", i)
            end = n if end < 0 else end
            out.append(inner[i:end])
            i = end + 1
    return out


class _Tx:
    """One transaction as it arrives, handed to the batch whole at its Commit."""

    __slots__ = ("changes", "commit_time", "context", "ddls", "emptied", "lsn", "lsn_text", "rows", "seq", "skip",
                 "stamps", "tracked", "txs", "xid")

    def __init__(self, begin: Begin, skip: bool) -> None:
        self.lsn = begin.final_lsn
        self.xid = begin.xid
        self.lsn_text = format_lsn(begin.final_lsn)
        self.commit_time = begin.commit_time.isoformat(timespec="microseconds")
        self.skip = skip
        self.seq = 0
        self.txs: list[tuple[Any, ...]] = []
        self.changes: list[tuple[Any, ...]] = []
        self.ddls: list[tuple[Any, ...]] = []
        self.tracked: dict[int, tuple[Any, ...]] = {}
        self.stamps: list[int] = []
        self.rows: list[DecodedRow] = []  # the tracked tables' own changes, for bypass detection
        self.context: bytes | None = None  # stream mode's 'rewind.context' message
        self.emptied: list[tuple[Any, ...]] = []  # empty tables truncated through the trigger, as journal 'T' rows


class Streamer:
    """Streams one database's journal into the mirror until stop is set. Run it in a thread."""

    def __init__(self, dsn: str, journal_url: str, *, slot: str | None = None, max_lag_bytes: int | None = None,
                 heartbeat_seconds: float = 10.0, batch_changes: int = 5000, batch_seconds: float = 0.2,
                 detect_bypass: bool = True) -> None:
        self.dsn = dsn
        self.journal_url = journal_url
        self._slot = check_slot_name(slot) if slot else None
        self.max_lag_bytes = max_lag_bytes
        self.heartbeat_seconds = heartbeat_seconds
        self.batch_changes = batch_changes
        self.batch_seconds = batch_seconds
        # Bypass detection reads the tracked tables' own rows too: about twice what the walsender sends.
        # Stream mode needs them whatever this says.
        self.detect_bypass = detect_bypass
        self.publications: tuple[str, ...] = JOURNAL_PUBLICATIONS
        self.database = ""
        self.mirror: MirrorStore | None = None
        self._lock = threading.Lock()
        self._stats = StreamStats()
        self._names: dict[str, str] = {}  # tracked id (as the stream's text) -> schema.table
        self._relids: dict[int, str] = {}  # oid of a table tracked now -> its tracked id (text)
        self._streamed: set[int] = set()  # oids of the tables tracked now in stream mode
        self._mirrored = 0  # the mirror's checkpoint: commits below it are already there
        self._confirmed = 0  # the last position told to the slot

    # ------------------------------------------------------------------------------ interface

    @property
    def slot(self) -> str:
        return self._slot or default_slot_name(self.database or "postgres")

    @property
    def stats(self) -> StreamStats:
        with self._lock:
            return self._stats

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._stats = replace(self._stats, **changes)

    def prepare(self) -> None:
        """Check the database and the mirror once, with one-line errors (BadInput) for bad input;
        run() calls it too, and retries it while the database is unreachable."""
        with connect(self.dsn, application_name="rewind-stream") as db:
            require_installed(db)
            got = db.execute("SELECT count(*) FROM pg_publication WHERE pubname IN "
                             "('rewind_journal', 'rewind_tracked')").fetchone()
            if not got or got[0] != 2 or not has_gap_table(db):
                raise BadInput("the rewind schema predates the decoding stream: run `rewind init` to upgrade it")
            self.database = db.info.dbname
        if self.mirror is None:
            self.mirror = MirrorStore(self.journal_url)
        self.mirror.checkpoint(self.database)  # refuses a mirror of another database
        self._update(gaps_total=self.mirror.gap_count())

    def run(self, stop: threading.Event) -> None:
        """Stream until stop is set; then flush, confirm and return. Failures are retried."""
        backoff = 0.2
        while not stop.is_set():
            try:
                self.prepare()
                self._session(stop)
                backoff = 0.2
            except _RETRYABLE as exc:
                self._update(ready=False)
                text = " ".join(mask_text(str(exc), self.dsn).split()) or type(exc).__name__
                log.warning("stream of %s interrupted (%s); retrying in %.1fs", mask_dsn(self.dsn), text, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        self._update(ready=False)

    # -------------------------------------------------------------------------------- session

    def _session(self, stop: threading.Event) -> None:
        assert self.mirror is not None
        with connect(self.dsn, application_name="rewind-stream") as db:
            for name, value in SESSION_SETTINGS.items():  # what stream mode's journaling returns reads as the stream
                db.execute("SELECT set_config(%s, %s, false)", (name, value))
            sync_publication(db)
            if self.mirror.checkpoint(self.database) is None:
                self._first_start(db)
            created = ensure_slot(db, self.slot)
            info = slot_info(db, self.slot)
            assert info is not None
            checkpoint = self.mirror.checkpoint(self.database)
            if created and checkpoint is not None and info.confirmed_lsn and checkpoint < info.confirmed_lsn:
                self._write_gap(db, info.confirmed_lsn, checkpoint, "the slot was missing and has been recreated")
            elif self.max_lag_bytes is not None and info.lag_bytes > self.max_lag_bytes:
                self._reset_slot(db, info)
            info = slot_info(db, self.slot)
            assert info is not None and info.confirmed_lsn is not None
            self._mirrored = max(self.mirror.checkpoint(self.database) or 0, 0)
            self._confirmed = info.confirmed_lsn
            self._snapshot_tracked(db, max(self._mirrored, info.confirmed_lsn))
            self.publications = (*JOURNAL_PUBLICATIONS, TABLES_PUBLICATION) \
                if self.detect_bypass or self._streamed else JOURNAL_PUBLICATIONS
            # From the slot's position, not the mirror's: transactions the mirror already has come
            # again (and are skipped below) so that their commit stamps, which follow the mirror
            # commit, are not lost when a crash falls between the two.
            stream = open_stream(self.dsn, self.slot, start_lsn=self._confirmed,
                                 publications=self.publications,
                                 status_interval=max(1.0, self.heartbeat_seconds))
            try:
                self._consume(stream, db, stop)
            except _Resubscribe:
                log.info("a table entered stream mode: subscribing to its rows")
            except _SlotReset:
                stream.close()
                info = slot_info(db, self.slot)
                if info is not None:  # a slot dropped under us is recreated, with a gap, next session
                    self._reset_slot(db, info)
            finally:
                stream.close()

    def _first_start(self, db: psycopg.Connection[Any]) -> None:
        """A new mirror starts with the journal as it stands: everything the journal holds in the
        snapshot a new slot exports is copied, in one mirror transaction with the checkpoint at
        that slot's consistent point. A crash before that commit leaves the mirror without a
        checkpoint, and the next start does it all again.

        The new slot is the stream's own, and one that exists already (rewind init --slot, a first
        start that crashed) is dropped first: the copy covers all it holds. Unless a table is (or
        was) in stream mode: then the existing slot may hold rows that only WAL has, so it is kept
        and a temporary slot gives the snapshot. Its transactions before the checkpoint come again
        as replays, which the mirror skips and the stream-mode journaling and commit stamps do not."""
        assert self.mirror is not None
        info = slot_info(db, self.slot)
        keep = False
        if info is not None:
            check_slot_owner(info, self.database)
            row = db.execute("SELECT EXISTS (SELECT 1 FROM rewind.tracked WHERE mode = 'stream')").fetchone()
            keep = bool(row and row[0])
            if not keep:  # the copy covers all it holds: replaying its WAL would be work for nothing
                self._wait_inactive(db)
                drop_slot(db, self.slot)
        name = f"{self.slot[:57]}_start" if keep else self.slot
        with exported_snapshot_slot(self.dsn, name, temporary=keep) as (lsn, snapshot), \
                connect(self.dsn, autocommit=False, application_name="rewind-stream") as snap:
            snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            snap.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            for name, value in SESSION_SETTINGS.items():  # text as the stream renders it
                snap.execute("SELECT set_config(%s, %s, true)", (name, value))
            self.mirror.write_all(self._journal_copy(snap), slot=self.slot, database=self.database, lsn=lsn)
        self._mirrored = lsn
        log.info("new mirror: copied the journal of %s as of %s", self.database, format_lsn(lsn))

    def _journal_copy(self, snap: psycopg.Connection[Any], chunk: int = 20000) -> Iterator[Batch]:
        """The journal's rows in mirror form, chunk by chunk through server-side cursors. Their
        commit position is unknown (0; the change id as position) unless a stream stamped it."""
        for name, query in (("tx", _COPY_TX), ("change", _COPY_CHANGES), ("ddl", _COPY_DDL)):
            with snap.cursor(name=f"rewind_copy_{name}") as cur:
                cur.execute(query)
                while rows := cur.fetchmany(chunk):
                    if name == "tx":
                        yield Batch(txs=[(*r[:8], iso_utc(r[8]), parse_lsn(r[9]) if r[9] else None, iso_utc(r[10]))
                                         for r in rows])
                    elif name == "change":
                        yield Batch(changes=[(0, r[0], *r) for r in rows])
                    else:
                        yield Batch(ddls=[(0, r[0], *r[:-1], iso_utc(r[-1])) for r in rows])

    def _snapshot_tracked(self, db: psycopg.Connection[Any], lsn: int) -> None:
        """The whole of rewind.tracked into the mirror: names must resolve for changes to tables
        tracked before the slot existed. Later inserts and updates arrive through the stream."""
        assert self.mirror is not None
        batch = Batch(lsn=lsn)
        for row in db.execute(_TRACKED + " ORDER BY id"):
            self._track_relid(row)
            values = list(row)
            values[4] = json.dumps(values[4])
            for i in (6, 7, 8):
                values[i] = iso_utc(values[i])
            batch.tracked[row[0]] = tuple(values)
            self._names[str(row[0])] = f"{row[2]}.{row[3]}"
        self._write(batch)

    def _write(self, batch: Batch) -> None:
        assert self.mirror is not None
        try:
            self.mirror.write(batch, slot=self.slot, database=self.database)
        except Exception:
            with self._lock:
                self._stats = replace(self._stats, mirror_errors_total=self._stats.mirror_errors_total + 1)
            raise
        self._mirrored = max(self._mirrored, batch.lsn)

    # -------------------------------------------------------------------------------- slot lag

    def _write_gap(self, db: psycopg.Connection[Any], end_lsn: int, start_lsn: int | None, reason: str,
                   lag: int | None = None) -> None:
        assert self.mirror is not None
        now = now_text()
        gap = Gap(kind="slot_reset", complete=False, at=now, start_lsn=start_lsn, end_lsn=end_lsn,
                  start_time=self.mirror.last_commit_time(), end_time=now,
                  detail={"reason": reason, "lag_bytes": lag, "max_lag_bytes": self.max_lag_bytes})
        self._write(Batch(gaps=[gap], lsn=end_lsn))
        record_gaps(db, [gap])
        with self._lock:
            self._stats = replace(self._stats, gaps_total=self._stats.gaps_total + 1)
        log.error("journal gap: %s; nothing between %s and %s is in the mirror", reason,
                  format_lsn(start_lsn or 0), format_lsn(end_lsn))

    def _reset_slot(self, db: psycopg.Connection[Any], info: Any) -> None:
        """Drop the slot that pins too much WAL, recreate it, and say so in the mirror."""
        self._wait_inactive(db)
        drop_slot(db, self.slot)
        new_lsn = create_slot(db, self.slot)
        # from what the mirror holds (the writer may have committed past the slot's position)
        start = max(info.confirmed_lsn or 0, self._mirrored)
        self._write_gap(db, new_lsn, start, f"slot lag {info.lag_bytes} bytes exceeded max_lag_bytes", info.lag_bytes)

    def _wait_inactive(self, db: psycopg.Connection[Any]) -> None:
        """The walsender of a session just closed may hold the slot a moment longer."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            current = slot_info(db, self.slot)
            if current is None or not current.active:
                return
            time.sleep(0.05)

    def _heartbeat(self, stream: Stream, db: psycopg.Connection[Any], idle: bool, wal_end_seen: int) -> int:
        """Lag from the server; with nothing pending, confirm the server's WAL end (or provoke one)."""
        if idle and stream.wal_end > self._confirmed:
            self._confirm(stream, stream.wal_end)
        info = slot_info(db, self.slot)
        if info is None:
            raise _SlotReset()
        lag = info.lag_bytes
        self._update(lag_bytes=lag, ready=True, **({"lag_seconds": 0.0} if idle else {}))
        if self.max_lag_bytes is not None and lag > self.max_lag_bytes:
            raise _SlotReset()
        if idle and lag > 0 and stream.wal_end <= wal_end_seen:
            db.execute("SELECT pg_logical_emit_message(false, %s, '')", (HEARTBEAT_PREFIX,))
        return stream.wal_end

    def _confirm(self, stream: Stream, lsn: int) -> None:
        stream.confirm(lsn)
        self._confirmed = lsn

    # -------------------------------------------------------------------------------- the loop

    def _consume(self, stream: Stream, db: psycopg.Connection[Any], stop: threading.Event) -> None:
        writer = _Writer(self, db, self._confirmed)
        try:
            self._read(stream, db, stop, writer)
        finally:
            writer.close()

    def _read(self, stream: Stream, db: psycopg.Connection[Any], stop: threading.Event, writer: _Writer) -> None:
        """Decode and assemble whole transactions into batches for the writer; confirm to the slot
        what the writer has committed. Only this thread touches the replication connection."""
        decoder = Decoder()
        handlers: dict[int, Any] = {}  # relation oid -> row handler, for the journal's tables
        watched: dict[int, Relation] = {}  # relation oid -> Relation, for the tracked tables
        mirrored = self._mirrored  # what the mirror held when the session began: replays end there
        batch = Batch(lsn=mirrored)
        stamps: list[tuple[int, str, str]] = []
        gaps: list[Gap] = []  # for rewind.gap, replays included (like the stamps)
        streams: list[StreamTx] = []  # stream-mode rows to journal, replays included
        streamed = self._streamed
        pending_since = 0.0
        submitted = self._confirmed
        tx: _Tx | None = None
        read = stream.cursor.read_message
        batch_changes, batch_seconds = self.batch_changes, self.batch_seconds
        last_beat = time.monotonic()
        wal_end_seen = stream.wal_end
        drained = False
        drain_started = 0.0
        self._update(ready=True)
        log.info("streaming slot %s of %s from %s", self.slot, self.database, format_lsn(self._confirmed))

        while True:
            msg = read()
            if msg is None:
                now = time.monotonic()
                writer.check()
                if writer.written > self._confirmed:
                    self._confirm(stream, writer.written)
                if stop.is_set():
                    if pending_since:
                        writer.submit(batch, stamps, gaps, streams)
                    writer.close()
                    if writer.written > self._confirmed:
                        self._confirm(stream, writer.written)
                    if tx is None and stream.wal_end > self._confirmed:
                        self._confirm(stream, stream.wal_end)
                    return
                if pending_since and now - pending_since >= batch_seconds:
                    writer.submit(batch, stamps, gaps, streams)
                    submitted = batch.lsn
                    batch, stamps, gaps, streams, pending_since = Batch(lsn=batch.lsn), [], [], [], 0.0
                if now - last_beat >= self.heartbeat_seconds:
                    idle = tx is None and not pending_since and writer.written >= submitted
                    wal_end_seen = self._heartbeat(stream, db, idle, wal_end_seen)
                    last_beat = now
                if drained:  # the stream is busy: let more arrive, so each wake-up reads many messages
                    drained = False
                    if now - drain_started < _DRAIN_PAUSE:
                        time.sleep(_DRAIN_PAUSE)
                    drain_started = time.monotonic()
                    continue
                busy = pending_since or writer.written < submitted
                # Woken by the server, with a row or only a keepalive (the walsender sends one after
                # each commit anywhere in the cluster while the slot's confirmed position trails its
                # own, and that is every commit of another database): read, then pause as above.
                drained = bool(select.select([stream], [], [], 0.02 if busy else min(0.1, self.heartbeat_seconds))[0])
                drain_started = time.monotonic()
                continue

            drained = True
            payload: bytes = msg.payload
            kind = payload[0]
            if kind == 73 or kind == 85 or kind == 68:  # Insert, Update, Delete
                assert tx is not None
                tx.seq += 1
                oid = _OID.unpack_from(payload, 1)[0]
                handler = handlers.get(oid)
                if handler is None:
                    table = watched.get(oid)
                    if table is not None:  # a tracked table's own row: kept raw until its Commit
                        tx.rows.append((table, msg.data_start, payload))
                elif kind == 73:  # the hot path: a row of a journal table, its Relation known
                    handler(tx, tuple_data(payload, 6)[0])
                else:
                    m = decoder.decode(payload)
                    assert isinstance(m, Update)
                    handler(tx, m.new)
            elif kind == 66:  # Begin
                begin = decoder.decode(payload)
                assert isinstance(begin, Begin)
                tx = _Tx(begin, skip=begin.final_lsn < mirrored)
            elif kind == 67:  # Commit: only its end LSN is needed (the Begin had the commit time)
                end_lsn = _COMMIT_END.unpack_from(payload, 10)[0]
                assert tx is not None
                if tx.context is not None and streamed:
                    self._take_streamed(tx, streams)
                bypasses = self._bypasses(tx) if tx.rows else []
                if tx.changes or tx.ddls:
                    bypasses += self._misfiled(tx)
                if not tx.skip:
                    batch.txs += tx.txs
                    batch.changes += tx.changes
                    batch.ddls += tx.ddls
                    batch.tracked.update(tx.tracked)
                    batch.gaps += bypasses
                stamps += [(i, tx.lsn_text, tx.commit_time) for i in tx.stamps]
                gaps += bypasses
                batch.lsn = max(batch.lsn, end_lsn)
                if not pending_since:
                    pending_since = time.monotonic()
                tx = None
                if len(batch.changes) >= batch_changes:
                    writer.submit(batch, stamps, gaps, streams)
                    submitted = batch.lsn
                    batch, stamps, gaps, streams, pending_since = Batch(lsn=batch.lsn), [], [], [], 0.0
                if writer.written > self._confirmed:
                    self._confirm(stream, writer.written)
                if streamed and TABLES_PUBLICATION not in self.publications:
                    raise _Resubscribe()
            elif kind == 82:  # Relation
                rel = decoder.decode(payload)
                assert isinstance(rel, Relation)
                handler = self._handler(rel)
                if handler is not None:
                    handlers[rel.oid] = handler
                else:
                    handlers.pop(rel.oid, None)
                if rel.namespace != "rewind":  # only rewind_tables publishes tables outside it
                    watched[rel.oid] = rel
            elif kind == 77:  # Message
                m = decoder.decode(payload)
                assert isinstance(m, Message)
                if tx is not None:
                    tx.seq += 1
                    if m.prefix == CONTEXT_PREFIX:
                        tx.context = m.content
                    elif m.prefix == TRUNCATE_PREFIX:  # shaped like a mirror change row, for find_bypasses
                        tx.emptied.append((None, None, None, str(msg.data_start), None, m.content.decode(), None, "T"))
                elif m.prefix == HEARTBEAT_PREFIX and not pending_since and writer.written >= submitted:
                    self._confirm(stream, max(msg.data_start, stream.wal_end))
            else:  # Truncate, Type, Origin: nothing of the journal's
                m = decoder.decode(payload)
                if tx is not None and kind == 84:
                    tx.seq += 1
                    assert isinstance(m, Truncate)
                    tx.rows += [(r, msg.data_start, payload) for r in m.relations if r.oid in watched]

    def _store(self, db: psycopg.Connection[Any], batch: Batch, stamps: list[tuple[int, str, str]],
               gaps: list[Gap], streams: list[StreamTx]) -> None:
        """Mirror commit, then in the database the stream-mode rows, the commit stamps and the gaps
        (in the writer's thread)."""
        if streams:  # journaled in the database first: the mirror takes what that wrote
            ready, incomplete = prepare(streams, self._table_id, _qualified)
            written, refused = ingest_or_report(db, ready, self._names, _qualified)
            incomplete += refused
            replayed = {r.tx.commit_lsn for r in ready if r.tx.replay}
            batch.gaps += [g for g in incomplete if g.end_lsn not in replayed]
            gaps = gaps + incomplete
            batch.txs += written.txs
            batch.changes += written.changes
        if batch or batch.lsn > self._mirrored:
            self._write(batch)
        if batch.gaps:
            with self._lock:
                self._stats = replace(self._stats, gaps_total=self._stats.gaps_total + len(batch.gaps))
        if stamps:
            ids, lsns, ats = zip(*stamps, strict=True)
            db.execute(_STAMP_COMMITS, (list(ids), list(lsns), list(ats)))
        record_gaps(db, gaps)
        if batch.txs or batch.changes:
            last = datetime.fromisoformat(max(t[10] for t in batch.txs)) if batch.txs else self._stats.last_commit_time
            with self._lock:
                s = self._stats
                self._stats = replace(
                    s, changes_total=s.changes_total + len(batch.changes),
                    transactions_total=s.transactions_total + len(batch.txs), last_commit_time=last,
                    lag_seconds=(datetime.now(UTC) - last).total_seconds() if last else s.lag_seconds)

    def _take_streamed(self, tx: _Tx, streams: list[StreamTx]) -> None:
        """Move the rows of stream-mode tables out of a transaction that said who it is (the
        context message) into what the writer journals. Without the message they stay, and are
        bypasses. TRUNCATE stays with the journal, which keeps the rows."""
        mine = [r for r in tx.rows if r[0].oid in self._streamed and r[2][0] != 84]
        if not mine:
            return
        tx.rows = [r for r in tx.rows if not (r[0].oid in self._streamed and r[2][0] != 84)]
        journal_tx = int(tx.txs[0][0]) if tx.txs else None
        streams.append(StreamTx(xid=tx.xid, commit_lsn=tx.lsn, commit_time=tx.commit_time, context=tx.context,
                                journal_tx=journal_tx, rows=mine, replay=tx.skip))

    def _bypasses(self, tx: _Tx) -> list[Gap]:
        """Bypass gaps of a transaction that wrote to tracked tables (see journal/bypass.py)."""
        gaps = find_bypasses(tx.rows, tx.changes + tx.emptied, table_id=self._table_id, table_name=_qualified,
                             xid=tx.xid, commit_lsn=tx.lsn, commit_time=tx.commit_time)
        for g in gaps:
            log.error("capture bypass: %s change(s) to %s in xid %s went around the triggers (%s images)",
                      g.changes, g.table_name, g.xid, "complete" if g.complete else "incomplete")
        return gaps

    def _misfiled(self, tx: _Tx) -> list[Gap]:
        """A gap for journal rows the transaction filed under another transaction's record."""
        gap = find_misfiled(tx.changes, tx.ddls, tx.txs, xid=tx.xid, commit_lsn=tx.lsn, commit_time=tx.commit_time)
        if gap is None:
            return []
        log.error("misfiled journal rows: xid %s filed %s row(s) under action(s) %s, not under a record of its own "
                  "(the session set rewind.tx)", gap.xid, gap.changes, (gap.detail or {}).get("filed_under"))
        return [gap]

    def _table_id(self, rel: Relation) -> str:
        """The tracked id the journal names a table by; its name for a table not known as tracked
        (the journal then has no rows of it, and all its rows are bypasses)."""
        return self._relids.get(rel.oid) or _qualified(rel)

    def _track_relid(self, row: tuple[Any, ...]) -> None:
        """Keep oid -> tracked id for the tables tracked now (a rewind.tracked row, TRACKED_COLUMNS),
        and which of them are in stream mode."""
        ident, relid, mode, untracked, dropped = str(row[0]), row[1], row[5], row[7], row[8]
        if relid is None:
            return
        if untracked is None and dropped is None:
            self._relids[int(relid)] = ident
            if mode == "stream":
                self._streamed.add(int(relid))
            else:
                self._streamed.discard(int(relid))
        elif self._relids.get(int(relid)) == ident:
            del self._relids[int(relid)]
            self._streamed.discard(int(relid))

    # ------------------------------------------------------------------ rows of the journal

    def _handler(self, rel: Relation) -> Any:
        """A function that turns one new tuple of a journal table into a mirror row, by column
        name, so that a migration reordering or adding columns does not break the stream."""
        if rel.namespace != "rewind":
            return None
        col = {name: i for i, name in enumerate(rel.column_names)}
        if rel.name == "change":
            head = itemgetter(col["id"], col["pos"], col["tx"], col["tbl"])
            tail = itemgetter(col["op"], col["before"], col["after"], col["at"])
            names = self._names

            def on_change(tx: _Tx, new: TupleData) -> None:
                ident, pos, txid, tbl = head(new)
                tx.changes.append((tx.lsn, tx.seq, ident, pos, txid, tbl, names.get(tbl) or self._name(tbl),
                                   *tail(new)))
            return on_change
        if rel.name == "tx":
            get = itemgetter(*(col[c] for c in ("id", "xid", "actor", "role", "application", "client_addr",
                                                "pid", "run", "started_at", "commit_lsn", "committed_at")))

            def on_tx(tx: _Tx, new: TupleData) -> None:
                row = get(new)
                if row[9] is None:
                    tx.txs.append((*row[:8], iso_utc(row[8]), tx.lsn, tx.commit_time))
                    tx.stamps.append(int(row[0]))
                else:  # written with its commit already known (stream mode, an adopted gap)
                    tx.txs.append((*row[:8], iso_utc(row[8]), parse_lsn(row[9]), iso_utc(row[10])))
            return on_tx
        if rel.name == "ddl":
            get = itemgetter(*(col[c] for c in ("id", "tx", "tbl", "command", "object_type", "object_identity",
                                                "at")))

            def on_ddl(tx: _Tx, new: TupleData) -> None:
                ident, txid, tbl, command, otype, identity, at = get(new)
                name = self._name(tbl) if isinstance(tbl, str) else None
                tx.ddls.append((tx.lsn, tx.seq, ident, txid, tbl, name, command, otype, identity, iso_utc(at)))
            return on_ddl
        if rel.name == "tracked":
            get = itemgetter(*(col[c] for c in TRACKED_COLUMNS))

            def on_tracked(tx: _Tx, new: TupleData) -> None:
                self._track_relid(get(new))
                row = list(get(new))
                row[4] = json.dumps(parse_text_array(row[4]))
                for i in (6, 7, 8):
                    row[i] = iso_utc(row[i])
                tx.tracked[int(row[0])] = tuple(row)
                self._names[row[0]] = f"{row[2]}.{row[3]}"
            return on_tracked
        return None

    def _name(self, tbl: str) -> str:
        """schema.table of a tracked id the stream has not described (should not happen: the
        snapshot and the stream cover rewind.tracked); asked of the database, else the id."""
        try:
            with connect(self.dsn) as db:
                row = db.execute("SELECT schema_name || '.' || table_name FROM rewind.tracked WHERE id = %s",
                                 (int(tbl),)).fetchone()
        except RewindError:
            row = None
        name = row[0] if row else f"tracked#{tbl}"
        self._names[tbl] = name
        return name


def _qualified(rel: Relation) -> str:
    return f"{rel.namespace}.{rel.name}"


def check_stream_slot(dsn: str, slot: str | None = None) -> str:
    """The stream slot's name, once it is known that create_stream_slot can take it: a valid name,
    and no slot of that name for another database or plugin. `rewind init --slot` asks first, so
    that bad input installs nothing."""
    with connect(dsn) as db:
        name = check_slot_name(slot) if slot else default_slot_name(db.info.dbname)
        info = slot_info(db, name)
        if info is not None:
            check_slot_owner(info, db.info.dbname)
        return name


def create_stream_slot(dsn: str, slot: str | None = None) -> str:
    """`rewind init --slot`: create the stream's slot ahead of the first `rewind stream`, so WAL
    is retained for it from now on. Returns the slot's name; an existing one is kept."""
    with connect(dsn) as db:
        require_installed(db)
        name = check_slot_name(slot) if slot else default_slot_name(db.info.dbname)
        ensure_slot(db, name)
        return name


class _Writer:
    """Mirror writes and commit stamps in a thread of their own, so that decoding the next batch
    overlaps writing the last one (sqlite3 and libpq release the GIL while they work). At most two
    batches wait, which bounds memory and pushes back on the reader. `written` is the end LSN of
    the last batch committed: the reader confirms that, and nothing beyond it."""

    def __init__(self, streamer: Streamer, db: psycopg.Connection[Any], start: int) -> None:
        self.written = start
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[Batch, list[tuple[int, str, str]], list[Gap], list[StreamTx]] | None] = \
            queue.Queue(maxsize=2)
        self._streamer, self._db = streamer, db
        self._thread = threading.Thread(target=self._run, name="rewind-mirror-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._streamer._store(self._db, *item)
            except BaseException as exc:
                self.error = exc
                return
            self.written = item[0].lsn

    def check(self) -> None:
        """Raise in the reader what the writer failed with: the session must end and replay."""
        if self.error is not None:
            raise self.error

    def submit(self, batch: Batch, stamps: list[tuple[int, str, str]], gaps: list[Gap],
               streams: list[StreamTx]) -> None:
        while True:
            self.check()
            try:
                self._queue.put((batch, stamps, gaps, streams), timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Let the writer finish what it has, then stop it; raises what it failed with."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self.error is not None:
            raise self.error


class _Resubscribe(Exception):
    """A table entered stream mode while the session did not read the tracked tables' rows: end
    the session (nothing after the last confirmed position is lost) and start one that does."""


class _SlotReset(Exception):
    """The slot is gone or too far behind: end the session and recreate it with a gap record."""
