"""Times on the command line: ISO-8601 or relative to now (15m, 2h, 3d)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from journal.errors import BadInput

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.I)
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An aware datetime; naive ISO times are taken in this machine's local zone."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text)
    if m:
        try:
            return now - timedelta(**{_UNITS[m[2].lower()]: float(m[1])})
        except OverflowError:
            raise BadInput(f"malformed time {text!r}: further back than the calendar goes") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"malformed time {text!r}: use ISO-8601 (2026-11-24T10:42:00Z) "
                       "or a relative time (15m, 2h, 3d)") from None
    return when if when.tzinfo else when.astimezone()
