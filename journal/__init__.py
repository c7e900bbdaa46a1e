"""Capture and the journal: the in-database schema, triggers, and reading what happened.

Names load on first use (PEP 562): the decoding stream pulls in psycopg2, SQLAlchemy and
Alembic, a third of a second of start-up that commands other than `rewind stream` don't need, and
`rewind backup` needs only the errors and the connection (about 50 ms less per backup command).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from journal.errors import BadInput, Refused, RewindError

if TYPE_CHECKING:
    from journal.adopt import Adopted, adopt_gap
    from journal.connection import connect, mask_dsn
    from journal.gaps import GapRecord, SlotStatus, capture_check, gaps_between
    from journal.reading import Action, Change, list_actions, row_history, show_action
    from journal.schema import InitResult, init
    from journal.selection import Selection
    from journal.stream import Streamer, StreamStats, check_stream_slot, create_stream_slot
    from journal.timespec import parse_time
    from journal.tracking import Status, TrackedTable, resolve_table, status, track, tracked_ids, untrack

_WHERE = {
    "Adopted": "adopt", "adopt_gap": "adopt",
    "connect": "connection", "mask_dsn": "connection",
    "GapRecord": "gaps", "SlotStatus": "gaps", "capture_check": "gaps", "gaps_between": "gaps",
    "Action": "reading", "Change": "reading", "list_actions": "reading", "row_history": "reading",
    "show_action": "reading",
    "InitResult": "schema", "init": "schema",
    "Selection": "selection",
    "Streamer": "stream", "StreamStats": "stream", "check_stream_slot": "stream", "create_stream_slot": "stream",
    "parse_time": "timespec",
    "Status": "tracking", "TrackedTable": "tracking", "resolve_table": "tracking", "status": "tracking",
    "track": "tracking", "tracked_ids": "tracking", "untrack": "tracking",
}

__all__ = ["Action", "Adopted", "BadInput", "Change", "GapRecord", "InitResult", "Refused", "RewindError", "Selection",
           "SlotStatus", "Status", "StreamStats", "Streamer", "TrackedTable", "adopt_gap", "capture_check",
           "check_stream_slot", "connect", "create_stream_slot", "gaps_between", "init", "list_actions", "mask_dsn",
           "parse_time", "resolve_table", "row_history", "show_action", "status", "track", "tracked_ids", "untrack"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        if name.startswith("__"):
            raise AttributeError(f"module 'journal' has no attribute {name!r}")
        # A submodule used as an attribute (journal.schema, journal.mirror) before anything imported it.
        try:
            return import_module(f"journal.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"journal.{name}":
                raise
            raise AttributeError(f"module 'journal' has no attribute {name!r}") from None
    value = getattr(import_module(f"journal.{module}"), name)
    globals()[name] = value
    return value
