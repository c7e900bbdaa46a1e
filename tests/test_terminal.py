"""On a terminal, `rewind undo` shows the plan and asks; only a yes applies it."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import connect_as


def _run_on_terminal(args: list[str], answer: bytes, env: dict[str, str], *,
                     stdout: Any = None) -> tuple[int, str]:
    """Run the real `rewind` executable with a pseudo-terminal as stdin/stderr (and stdout, unless
    given) and answer its prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rewind", *args], stdin=follower,
                            stdout=follower if stdout is None else stdout, stderr=follower, env=env, close_fds=True)
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


@pytest.mark.parametrize("answer, applied, said", [
    (b"y\n", True, "undone"),
    (b"n\n", False, "not confirmed: nothing applied"),
    (b"\x04", False, "aborted (end of input"),  # Ctrl-D: end of input
])
def test_undo_asks_on_a_terminal(dsn: str, conn: psycopg.Connection[Any], answer: bytes, applied: bool,
                                 said: str) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    env = {**os.environ, "REWIND_DSN": dsn, "COLUMNS": "120"}
    assert subprocess.run([sys.executable, "-m", "rewind", "init"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([sys.executable, "-m", "rewind", "track", "t"], env=env,
                          capture_output=True).returncode == 0
    with connect_as(dsn, "agent-7") as agent:
        agent.execute("DELETE FROM t")
    code, screen = _run_on_terminal(["undo", "--actor", "agent-7"], answer, env)
    assert "undo plan" in screen and "public.t" in screen  # the person saw the plan before answering
    assert code == (0 if applied else 1) and said in screen
    assert conn.execute("SELECT count(*) FROM t").fetchone() == ((2,) if applied else (0,))


def test_json_on_a_terminal_keeps_the_plan_and_the_question_off_stdout(dsn: str, conn: psycopg.Connection[Any],
                                                                       tmp_path: Path) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    env = {**os.environ, "REWIND_DSN": dsn, "COLUMNS": "120"}
    for args in (["init"], ["track", "t"]):
        assert subprocess.run([sys.executable, "-m", "rewind", *args], env=env, capture_output=True).returncode == 0
    with connect_as(dsn, "agent-7") as agent:
        agent.execute("DELETE FROM t")
    with (tmp_path / "out.json").open("w+") as out:
        code, screen = _run_on_terminal(["undo", "--actor", "agent-7", "--json"], b"y\n", env, stdout=out)
        out.seek(0)
        result = json.load(out)  # stdout holds the JSON result and nothing else
    assert code == 0 and result["applied"] and result["rows"] == 2
    assert "undo plan" in screen and "Apply this undo?" in screen  # the person still saw the plan, on stderr
