"""Running a Streamer in a thread or `rewind stream` as a process, and reading the mirror, for
the decoding-stream suites."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, text

from journal import mirror
from journal.stream import Streamer


def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until condition() is truthy; its value, or AssertionError naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def streaming(dsn: str, url: str, **options: Any) -> Iterator[Streamer]:
    options.setdefault("heartbeat_seconds", 0.3)
    streamer = Streamer(dsn, url, **options)
    stop = threading.Event()
    thread = threading.Thread(target=streamer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: streamer.stats.ready, what="the stream to be ready")
        yield streamer
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the streamer did not stop"


def mirror_scalar(url: str, query: str) -> Any:
    engine = create_engine(mirror.normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar()
    finally:
        engine.dispose()


def mirror_rows(url: str, query: str) -> list[Any]:
    engine = create_engine(mirror.normalize_url(url))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def mirrored_changes(url: str) -> int:
    try:
        return int(mirror_scalar(url, "SELECT count(*) FROM rewind_change"))
    except Exception:  # not created yet
        return 0


def mirror_checkpoint(url: str) -> int | None:
    """The mirror's checkpoint, None before the stream's first start has committed one."""
    try:
        value = mirror_scalar(url, "SELECT max(confirmed_lsn) FROM rewind_checkpoint")
    except Exception:  # not created yet
        return None
    return int(value) if value is not None else None


def db_scalar(dsn: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def slot_lsns(dsn: str) -> tuple[int, int] | None:
    """(confirmed_flush_lsn, restart_lsn) of the database's slot, as numbers."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint, (restart_lsn - '0/0')::bigint "
            "FROM pg_replication_slots WHERE database = current_database()").fetchone()
        return (int(row[0]), int(row[1])) if row else None


class RewindProcess:
    """`python -m rewind ARGS` as a child process, to be killed or stopped; its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, *,
                 new_session: bool = False) -> None:
        self.log = log
        self._fh = log.open("ab")
        env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "rewind", *args], stdout=self._fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=new_session)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._fh.close()

    def terminate(self, timeout: float = 30, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class StreamProcess(RewindProcess):
    """`python -m rewind stream` as a child process, to be killed."""

    def __init__(self, dsn: str, url: str, log: Path) -> None:
        super().__init__(["stream", "--dsn", dsn, "--journal", url, "--heartbeat-seconds", "0.3"], log)
