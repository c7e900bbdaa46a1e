"""On a terminal, `rewind undo` shows the plan and asks; only a yes applies it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from helpers import connect_as


def _run_on_terminal(args: list[str], answer: bytes, env: dict[str, str]) -> tuple[int, str]:
    """Run the real `rewind` executable with a pseudo-terminal as stdin/stdout and answer its prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rewind", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"Apply this undo?" in seen:
            os.write(leader, answer)
            answered = True
    os.close(leader)
    return proc.wait(timeout=60), seen.decode(errors="replace")


@pytest.mark.parametrize("answer, applied", [(b"y\n", True), (b"n\n", False)])
def test_undo_asks_on_a_terminal(dsn: str, conn: psycopg.Connection[Any], answer: bytes, applied: bool) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    env = {**os.environ, "REWIND_DSN": dsn, "COLUMNS": "120"}
    assert subprocess.run([sys.executable, "-m", "rewind", "init"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([sys.executable, "-m", "rewind", "track", "t"], env=env,
                          capture_output=True).returncode == 0
    with connect_as(dsn, "agent-7") as agent:
        agent.execute("DELETE FROM t")
    code, screen = _run_on_terminal(["undo", "--actor", "agent-7"], answer, env)
    assert "undo plan" in screen and "public.t" in screen  # the person saw the plan before answering
    assert code == (0 if applied else 1)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == ((2,) if applied else (0,))
