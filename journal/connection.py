"""Connecting to the target database, with errors that never show a password."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from journal.errors import BadInput

# The password runs to the last @ before the host part: unencoded, it may hold spaces or an @.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^/?#]*)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*(?:'|$)|\S+)", re.I)


def mask_dsn(dsn: str) -> str:
    """A DSN as it may be shown or logged: the password replaced by ***."""
    masked = _URL_PASSWORD.sub(lambda m: m["head"] + "***" + m["tail"], dsn)
    return _KV_PASSWORD.sub(lambda m: m["head"] + "***", masked)


def mask_text(text: str, dsn: str) -> str:
    """Error text from libpq may echo the DSN or the password itself; scrub both."""
    out = text.replace(dsn, mask_dsn(dsn))
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:  # unparsable, as when its password holds a space: libpq quotes it
        found = _URL_PASSWORD.search(dsn)
        return out.replace(f'"{found["pw"]}"', '"***"') if found and found["pw"] else out
    if password:
        out = out.replace(str(password), "***")
    return out


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's parameters, or a one-line BadInput with the DSN and libpq's reason masked."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(mask_text(str(exc), dsn).split())
        raise BadInput(f"malformed DSN {mask_dsn(dsn)}: {reason}") from None


def connect(dsn: str | None, *, autocommit: bool = True, application_name: str = "rewind") -> psycopg.Connection:
    """Open a connection or fail with a one-line BadInput naming the masked DSN."""
    if not dsn:
        raise BadInput("no database given: pass --dsn or set REWIND_DSN")
    info = parse_dsn(dsn)
    info.setdefault("application_name", application_name)
    info.setdefault("connect_timeout", 10)
    try:
        conn = psycopg.connect(make_conninfo("", **info), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        reason = " ".join(mask_text(str(exc), dsn).split())
        raise BadInput(f"cannot connect to {mask_dsn(dsn)}: {reason}") from None
    # rewind's queries name every relation with its schema, so they need no search_path; and with
    # the default one ("$user", public) an operator that some role put there would run as this
    # session's role wherever it matches a comparison better than pg_catalog's. A SET, not a
    # startup option, so that SET ... TO DEFAULT gives back the role's own (undo --fire-triggers).
    conn.execute("SET search_path = pg_catalog, pg_temp")
    if not autocommit:
        conn.commit()
    return conn
