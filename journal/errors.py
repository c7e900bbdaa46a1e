"""The two ways a command can fail, which the CLI maps to its exit codes."""

from typing import Any


class RewindError(Exception):
    """Base class; exit_code is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.payload = payload  # what --json prints instead of a bare error


class BadInput(RewindError):
    """The request itself is wrong (unknown table, malformed time, bad DSN): nothing was changed."""

    exit_code = 2


class Refused(RewindError):
    """The request was understood but refused (conflicts, stale plan, too many rows)."""

    exit_code = 1
