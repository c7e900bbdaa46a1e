"""`rewind serve`: one process per database running the decoding stream, the backup scheduler
and the HTTP API side by side, and stopping them in order on SIGTERM.

Threads rather than processes, because the three share one thing — the stream's statistics — and
the heavy work (decoding, the mirror's writes, pg_dump) waits on sockets and subprocesses, not the
GIL. uvicorn runs in a thread of its own so that it installs no signal handlers: the order of the
stop is ours (HTTP first, so probes see the process go; then the stream flushes and confirms;
then the scheduler lets a running job finish).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from backup import config as backup_config
from backup import schedule
from journal import BadInput, Streamer, mask_dsn, mirror
from rewind import api, logs, metrics, priority
from rewind.config import Settings

log = logging.getLogger("rewind.serve")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set `stop` instead of killing the process, for as long as the block
    runs; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a taken port or an unknown host is a one-line error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _backup_config(settings: Settings) -> backup_config.BackupConfig:
    cfg = backup_config.load(settings.config) if settings.config else backup_config.BackupConfig()
    if cfg.schedule and not cfg.store:
        raise BadInput(f"{settings.config}: [backup.schedule] needs a [backup] store")
    for expr in cfg.schedule.values():
        schedule.trigger(expr)  # a bad cron expression is bad input now, not a failing job later
    return cfg


class _Worker(threading.Thread):
    """A thread whose unexpected end stops the whole service: a sidecar that has silently lost
    its stream or its HTTP server must not go on looking alive."""

    def __init__(self, name: str, target: Callable[[], Any], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._on_end = target, stop
        self.failed = False

    def run(self) -> None:
        try:
            self._work()
        except BaseException:
            self.failed = True
            log.exception("%s failed; stopping", self.name)
        finally:
            self._on_end.set()


def serve(settings: Settings, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or until `stop` is set, for callers that embed the service);
    returns the exit code: 0 after a clean stop, 1 when a part of the service failed.
    Bad input (no or unreachable database, bad mirror URL, address in use, bad rewind.toml)
    raises BadInput before anything starts."""
    if not settings.dsn:
        raise BadInput("no database given: pass --dsn, set REWIND_DSN, or dsn under [serve] in rewind.toml")
    dsn = settings.dsn
    url = settings.journal or mirror.default_journal_url(dsn)
    cfg = _backup_config(settings)
    if cfg.schedule:
        schedule.check_jobstore(cfg.jobstore)
    sock = listen(settings.host, settings.port)
    try:
        streamer = Streamer(dsn, url, slot=settings.slot, max_lag_bytes=settings.max_lag,
                            heartbeat_seconds=settings.heartbeat_seconds)
        streamer.prepare()
    except BaseException:
        sock.close()
        raise
    if stop is None:
        stop = threading.Event()
    handler = logs.configure(settings.log_format, secrets=[dsn, url, cfg.dsn, cfg.scratch_dsn])
    try:
        with stop_on_signals(stop):
            return _run(streamer, cfg, sock, stop, nice=settings.nice)
    finally:
        logging.getLogger().removeHandler(handler)


def _run(streamer: Streamer, cfg: backup_config.BackupConfig, sock: socket.socket, stop: threading.Event, *,
         nice: int) -> int:
    host, port = sock.getsockname()[:2]
    app = api.create_app(lambda: streamer.stats, metrics.service_registry(lambda: streamer.stats),
                         slot=streamer.slot)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=5))
    stream_stop = threading.Event()
    priority.lower_session(nice)  # the whole sidecar below PostgreSQL, when it runs as a service
    http = _Worker("rewind-http", lambda: server.run(sockets=[sock]), stop)

    def run_stream() -> None:
        priority.lower_thread(nice)
        streamer.run(stream_stop)

    stream = _Worker("rewind-stream", run_stream, stop)
    scheduler = None
    try:
        scheduler = schedule.start_scheduler(cfg, served_dsn=streamer.dsn) if cfg.schedule else None
        http.start()
        stream.start()
        log.info("serving %s", streamer.database, extra={
            "http": f"http://{host}:{port}", "slot": streamer.slot, "journal": mask_dsn(streamer.journal_url),
            "dsn": mask_dsn(streamer.dsn), "backup_jobs": sorted(cfg.schedule)})
        while not stop.wait(0.5):
            pass
    finally:
        log.info("stopping: HTTP, then the stream (flush and confirm), then the scheduler")
        server.should_exit = True
        if http.is_alive():
            http.join(15)
        stream_stop.set()
        if stream.is_alive():
            stream.join()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        sock.close()
    s = streamer.stats
    log.info("stopped after %d change(s) in %d transaction(s)", s.changes_total, s.transactions_total,
             extra={"changes_total": s.changes_total, "transactions_total": s.transactions_total})
    return 1 if http.failed or stream.failed else 0
