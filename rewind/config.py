"""Settings of `rewind serve`, from four places in a fixed order: flags > environment
(`REWIND_*`) > the `[serve]` table of rewind.toml > defaults. One table here says which setting
has which environment variable and TOML key, so the order is the same for every setting.

```toml
[serve]
dsn = "postgresql://rewind@db/shop"   # better REWIND_DSN: the file may be world-readable
journal = "sqlite:////var/lib/rewind/shop.sqlite"
http = "127.0.0.1:8321"
log_format = "json"
slot = "rewind_shop"
max_lag = 10000000000
heartbeat_seconds = 10
nice = 10                              # the stream's CPU priority below PostgreSQL's (0: the same)
```

The `[backup]` table of the same file keeps its own settings and schedules (backup.config).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from backup.config import read_document
from journal.connection import mask_dsn
from journal.errors import BadInput

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8321
LOG_FORMATS: Final = ("text", "json")
# The decoding stream is asynchronous: under load it may trail a little, but it should not take
# CPU from the database it journals. Measured: its lag after a pgbench burst stayed under 0.2 s.
DEFAULT_NICE: Final = 10


@dataclass(frozen=True)
class Settings:
    dsn: str | None = None
    journal: str | None = None  # SQLAlchemy URL of the mirror; None: an SQLite file named after the database
    http: str = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    log_format: str = "text"
    slot: str | None = None
    max_lag: int | None = None  # bytes of WAL behind before the slot is recreated with a gap
    heartbeat_seconds: float = 10.0
    nice: int = DEFAULT_NICE  # how far below normal CPU priority the stream runs
    config: Path | None = None  # the rewind.toml read, if any (its [backup] schedules run too)

    @property
    def host(self) -> str:
        return parse_http(self.http)[0]

    @property
    def port(self) -> int:
        return parse_http(self.http)[1]

    def __repr__(self) -> str:  # a Settings may end up in a log or a traceback: never with a password
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("dsn", "journal"):
            if shown[key]:
                shown[key] = mask_dsn(shown[key])
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _log_format(value: Any) -> str:
    text = _text(value).lower()
    if text not in LOG_FORMATS:
        raise ValueError("use text or json")
    return text


def _positive(convert: Callable[[Any], float], unit: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):  # TOML true is not a number of anything
            raise ValueError(f"expected a number of {unit}")
        number = convert(value)
        if not number > 0:
            raise ValueError("must be positive")
        return number
    return parse


def _nice(value: Any) -> int:
    if isinstance(value, bool) or not 0 <= int(value) <= 19 or int(value) != float(value):
        raise ValueError("use a whole number from 0 (normal priority) to 19 (lowest)")
    return int(value)


def _http(value: Any) -> str:
    host, port = parse_http(_text(value))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# setting -> (environment variable, parser); the TOML key is the setting's name
_SOURCES: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "dsn": ("REWIND_DSN", _text),
    "journal": ("REWIND_JOURNAL", _text),
    "http": ("REWIND_HTTP", _http),
    "log_format": ("REWIND_LOG_FORMAT", _log_format),
    "slot": ("REWIND_SLOT", _text),
    "max_lag": ("REWIND_MAX_LAG", _positive(int, "bytes")),
    "heartbeat_seconds": ("REWIND_HEARTBEAT_SECONDS", _positive(float, "seconds")),
    "nice": ("REWIND_NICE", _nice),
}


def parse_http(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, :PORT (the default host) or PORT alone; ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"use HOST:PORT, e.g. {DEFAULT_HOST}:{DEFAULT_PORT}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    host = host or DEFAULT_HOST
    if ":" in host or bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("write an IPv6 address in brackets, [::1]:PORT") from None
        if not bracketed:
            raise ValueError("write an IPv6 address in brackets, [::1]:PORT")
    return host, port


def read_toml(path: Path | None, env: Mapping[str, str]) -> tuple[Path | None, dict[str, Any]]:
    """The rewind.toml read (backup.config.read_document: one file for both tables) and its
    `[serve]` table."""
    p, doc = read_document(path, env)
    if p is None:
        return None, {}
    section = doc.get("serve", {})
    if not isinstance(section, dict):
        raise BadInput(f"{p}: [serve] must be a table")
    unknown = set(section) - set(_SOURCES)
    if unknown:
        raise BadInput(f"{p}: unknown [serve] setting(s): {', '.join(sorted(unknown))} "
                       f"(known: {', '.join(_SOURCES)})")
    return p, section


def load_settings(flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                  config: Path | None = None) -> Settings:
    """Resolve every setting; flags whose value is None were not given. Raises BadInput naming the
    source of a bad value (the flag, the variable or the file)."""
    env = os.environ if env is None else env
    flags = flags or {}
    unknown = set(flags) - set(_SOURCES)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    path, section = read_toml(config, env)
    values: dict[str, Any] = {}
    for name, (var, parse) in _SOURCES.items():
        candidates = ((f"--{name.replace('_', '-')}", flags.get(name)), (var, env.get(var) or None),
                      (f"{path} [serve] {name}", section.get(name)))
        for source, raw in candidates:
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
            except (ValueError, TypeError) as exc:
                raise BadInput(f"bad {source} {mask_dsn(str(raw))!r}: {exc}") from None
            break
    return Settings(**values, config=path)
