"""Connecting to the target database, with errors that never show a password."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from journal.errors import BadInput

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def mask_dsn(dsn: str) -> str:
    """A DSN as it may be shown or logged: the password replaced by ***."""
    masked = _URL_PASSWORD.sub(lambda m: m["head"] + "***" + m["tail"], dsn)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", masked)


def mask_text(text: str, dsn: str) -> str:
    """Error text from libpq may echo the DSN or the password itself; scrub both."""
    out = text.replace(dsn, mask_dsn(dsn))
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        out = out.replace(str(password), "***")
    return out


def connect(dsn: str | None, *, autocommit: bool = True, application_name: str = "rewind") -> psycopg.Connection:
    """Open a connection or fail with a one-line BadInput naming the masked DSN."""
    if not dsn:
        raise BadInput("no database given: pass --dsn or set REWIND_DSN")
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"malformed DSN {mask_dsn(dsn)}: {mask_text(str(exc), dsn)}") from None
    info.setdefault("application_name", application_name)
    info.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(make_conninfo("", **info), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        reason = " ".join(mask_text(str(exc), dsn).split())
        raise BadInput(f"cannot connect to {mask_dsn(dsn)}: {reason}") from None
