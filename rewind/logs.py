"""Log lines for the long-running commands (`rewind serve`, `rewind stream`): text for people,
or one JSON object per line for a log pipeline. Both go through the same masking, because a
libpq error or a SQLAlchemy URL in a message can carry a password."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from journal.connection import mask_dsn, mask_text

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                       "color_message", "taskName"}


class _Masking(logging.Formatter):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = mask_text(text, secret)
        return mask_dsn(text)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        return {k: self.mask(v) if isinstance(v, str) else v for k, v in vars(record).items()
                if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(_Masking):
    """time (UTC, ISO-8601), level, logger, message, the record's extra fields, and the
    exception's traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.mask(record.getMessage()),
            **self.fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=lambda v: self.mask(str(v)))


class TextFormatter(_Masking):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        extra = "".join(f" {k}={v}" for k, v in self.fields(record).items())
        line = f"{when} {record.levelname} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.mask(line)


def configure(log_format: str = "text", *, secrets: Iterable[str | None] = (),
              level: int = logging.INFO) -> logging.Handler:
    """Route every logger (rewind's, uvicorn's, APScheduler's) to stderr in one format; returns
    the handler, for a caller that embeds the service to remove when done."""
    formatter = (JsonFormatter if log_format == "json" else TextFormatter)(s for s in secrets if s)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler's INFO lines ("Running job ...") repeat what rewind.backup.schedule logs per run.
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
    return handler
