"""Capture and the journal: the in-database schema, triggers, and reading what happened.

The decoding stream's names load on first use (PEP 562): it pulls in psycopg2, SQLAlchemy and
Alembic, a third of a second of start-up that commands other than `rewind stream` don't need.
"""

from typing import TYPE_CHECKING, Any

from journal.adopt import Adopted, adopt_gap
from journal.connection import connect, mask_dsn
from journal.errors import BadInput, Refused, RewindError
from journal.gaps import GapRecord, SlotStatus, capture_check, gaps_between
from journal.reading import Action, Change, list_actions, row_history, show_action
from journal.schema import InitResult, init
from journal.selection import Selection
from journal.timespec import parse_time
from journal.tracking import Status, TrackedTable, resolve_table, status, track, tracked_ids, untrack

if TYPE_CHECKING:
    from journal.stream import Streamer, StreamStats, create_stream_slot

__all__ = ["Action", "Adopted", "BadInput", "Change", "GapRecord", "InitResult", "Refused", "RewindError", "Selection",
           "SlotStatus", "Status", "StreamStats", "Streamer", "TrackedTable", "adopt_gap", "capture_check", "connect",
           "create_stream_slot", "gaps_between", "init", "list_actions", "mask_dsn", "parse_time", "resolve_table",
           "row_history", "show_action", "status", "track", "tracked_ids", "untrack"]


def __getattr__(name: str) -> Any:
    if name in ("Streamer", "StreamStats", "create_stream_slot"):
        from journal import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'journal' has no attribute {name!r}")
