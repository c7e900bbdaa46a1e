"""Small helpers the suites share: connecting as somebody, running the CLI, reading a table."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rewind import output
from rewind.cli import run


def connect_as(dsn: str, actor: str | None = None, *, run_id: str | None = None,
               application: str | None = None) -> psycopg.Connection[Any]:
    """A connection whose writes are attributed the way an agent would set it up: no code change,
    only connection options."""
    options = []
    if actor:
        options.append(f"-c rewind.actor={actor}")
    if run_id:
        options.append(f"-c rewind.run={run_id}")
    kwargs: dict[str, Any] = {"autocommit": True}
    if options:
        kwargs["options"] = " ".join(options)
    if application:
        kwargs["application_name"] = application
    return psycopg.connect(dsn, **kwargs)


def rewind(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    output.out.width = 200  # as wide as a real terminal: long values stay on one line
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rewind_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code, out, _ = rewind(capsys, *args, "--json")
    return code, json.loads(out) if out.strip() else None


def table_state(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The whole content of a table, order-independent, as comparable text."""
    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema or "public", name)
    rows = conn.execute(sql.SQL("SELECT to_jsonb(t)::text FROM {} t").format(ident)).fetchall()
    return sorted(r[0] for r in rows)


def database_state(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    return {t: table_state(conn, t) for t in tables}
