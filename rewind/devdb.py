"""A throwaway PostgreSQL cluster for the demo, the tests and the benchmarks.

Rewind's promises (every write journaled, every undo exact, logical decoding sees what triggers
miss) only mean something when checked against a real server, so tests and benchmarks start a
private cluster from the local binaries instead of mocking the database or borrowing a shared one.
A private cluster also lets us pick settings a shared server would not allow (``wal_level=logical``,
``fsync=off``) and throw the whole thing away afterwards, whatever state a test left it in.

Run ``python -m rewind.devdb`` for a cluster to poke at by hand; it lives until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import enum
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["DEFAULT_SETTINGS", "Cluster", "find_bindir", "main"]

HOST: Final = "127.0.0.1"
SUPERUSER: Final = "postgres"
# PostgreSQL refuses to run as root, so when we are root the server runs as this OS user.
OS_USER: Final = "postgres"

# wal_level=logical because the sidecar's decoding stream is under test; fsync and full-page
# writes off because a throwaway cluster never needs crash safety against power loss and they
# dominate the cost of CREATE DATABASE and bulk loads; synchronous_commit stays on so that
# commit latency in benchmarks resembles production.
DEFAULT_SETTINGS: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "wal_level": "logical",
        "fsync": "off",
        "synchronous_commit": "on",
        "full_page_writes": "off",
        "max_connections": "100",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "shared_buffers": "128MB",
    }
)

# These decide where the server can be reached; the cluster owns them so that dsn() never lies.
_MANAGED_SETTINGS: Final = frozenset({"listen_addresses", "port", "unix_socket_directories"})
_SERVER_BINARIES: Final = ("initdb", "pg_ctl", "postgres")
_CONF_NAME: Final = "rewind_devdb.conf"
_SETTING_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH: Final = 107
_START_TIMEOUT_S: Final = 60
_PORT_ATTEMPTS: Final = 3


class _Unset(enum.Enum):
    """Sentinel type, because ``None`` already means "no password" in :meth:`Cluster.dsn`."""

    TOKEN = enum.auto()


_UNSET: Final = _Unset.TOKEN


class _CommandFailed(Exception):
    def __init__(self, cmd: Sequence[str], returncode: int, output: str) -> None:
        super().__init__(f"{' '.join(cmd)} exited with {returncode}:\n{output.strip()}")
        self.returncode = returncode
        self.output = output


def _is_server_bindir(path: Path) -> bool:
    return (path / "initdb").is_file()


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: compare "9.6" < "15" numerically, not as strings.
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """Locate the server binaries (initdb, pg_ctl, postgres).

    pg_config is asked first because it names the installation the client libraries were
    built against; PATH next, resolving symlinks because distributions often link only a few
    programs into /usr/bin or /usr/local/bin while pg_dump and friends stay in the real bindir;
    Debian/Ubuntu's versioned directories last, newest first.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            if out and _is_server_bindir(Path(out)):
                return Path(out)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _is_server_bindir(p)]
    if candidates:
        return max(candidates, key=_version_key)
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: tried `pg_config --bindir`, "
        "PATH and /usr/lib/postgresql/*/bin. Install the server, e.g. "
        "`apt-get install postgresql` or `brew install postgresql`."
    )


def _free_port() -> int:
    # The port is free when we look; another process may still take it before the server binds,
    # which is why start() retries with a new port when the log says "address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_quote(value: str) -> str:
    # Quoted values are accepted for every parameter type, so quoting always is the safe choice.
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _server_env() -> dict[str, str]:
    # A developer's PGDATA/PGPORT/PGHOST must not steer initdb or pg_ctl to another cluster.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class Cluster:
    """A private PostgreSQL cluster in a temporary directory, deleted when stopped.

    Stopping is idempotent and also happens at interpreter exit and on SIGINT/SIGTERM, so an
    interrupted test run or demo does not leave servers and data directories behind.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        base_dir: Path | None = None,
        password: str = "rewind-dev",
    ) -> None:
        merged = {**DEFAULT_SETTINGS, **(settings or {})}
        for name in merged:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"not a PostgreSQL setting name: {name!r}")
            if name in _MANAGED_SETTINGS:
                raise ValueError(f"{name} is managed by the cluster (pass port= to choose the port)")
        if "\n" in password or "\r" in password or not password:
            # initdb --pwfile reads only the first line.
            raise ValueError("password must be a non-empty single line")
        self._settings = merged
        self._requested_port = port
        self._requested_base = Path(base_dir) if base_dir is not None else None
        self._password = password
        self._lock = threading.RLock()
        self._bindir: Path | None = None
        self._base: Path | None = None
        self._owns_base = False
        self._port: int | None = port
        self._running = False
        self._as_os_user = os.geteuid() == 0

    # ----------------------------------------------------------------------------- properties

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the cluster has no port yet: call start() first")
        return self._port

    @property
    def password(self) -> str:
        return self._password

    @property
    def running(self) -> bool:
        return self._running

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise RuntimeError("the cluster has no directory yet: call start() first")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    def __repr__(self) -> str:
        where = f"port={self._port}, base_dir={self._base}" if self._base else "not started"
        return f"<Cluster {where}>"

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Create and start the cluster; return it for chaining. A running cluster is left alone."""
        with self._lock:
            if self._running:
                return self
            bindir = self.bindir
            for name in _SERVER_BINARIES:
                if not (bindir / name).is_file():
                    raise RuntimeError(f"{name} is missing from {bindir}")
            if self._as_os_user:
                self._check_os_user()
            self._make_base()
            # Registered before initdb so that a Ctrl-C during startup still cleans up.
            _register(self)
            try:
                self._initdb()
                self._launch()
            except BaseException:
                self.stop()
                raise
            self._running = True
            return self

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is about to be deleted) and delete it."""
        with self._lock:
            base = self._base
            if base is None:
                return
            try:
                if (base / "data" / "postmaster.pid").exists():
                    try:
                        self._run(
                            [self.bin("pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "-w", "stop"],
                            timeout=_START_TIMEOUT_S,
                        )
                    except (_CommandFailed, subprocess.TimeoutExpired, OSError):
                        self._kill_postmaster(base / "data" / "postmaster.pid")
            finally:
                self._remove_files(base)
                self._base = None
                self._running = False
                if self._requested_port is None:
                    self._port = None
                _unregister(self)

    def restart(self) -> None:
        """Restart on the same port, e.g. to apply a setting that needs a restart or test recovery."""
        with self._lock:
            if not self._running:
                raise RuntimeError("the cluster is not running")
            offset = self._log_size()
            cmd = [
                self.bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", str(_START_TIMEOUT_S), "-m", "fast", "restart",
            ]  # fmt: skip
            try:
                self._run(cmd, timeout=_START_TIMEOUT_S * 3)
            except (_CommandFailed, subprocess.TimeoutExpired) as exc:
                raise RuntimeError(self._startup_error("restart", exc, offset)) from None

    # ------------------------------------------------------------------------------- services

    def dsn(
        self,
        dbname: str = "postgres",
        *,
        user: str = SUPERUSER,
        password: str | _Unset | None = _UNSET,
    ) -> str:
        """A URL for psycopg, SQLAlchemy, psql and pg_dump alike; ``password=None`` leaves it out."""
        secret = self._password if isinstance(password, _Unset) else password
        auth = quote(user, safe="")
        if secret is not None:
            auth += ":" + quote(secret, safe="")
        return f"postgresql://{auth}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create a database and return its DSN; cloning a template is how tests get cheap fresh DBs."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self._admin() as conn:
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database even if a test leaked connections to it."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def bin(self, name: str) -> str:
        """Path of a client program from the same installation, so versions match the server."""
        path = self.bindir / name
        if not path.is_file():
            raise FileNotFoundError(f"{name} not found in {self.bindir}")
        return str(path)

    # -------------------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            yield conn

    def _check_os_user(self) -> None:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, but PostgreSQL refuses to run as root and there is no {OS_USER!r} "
                f"OS user to run it as; create one (e.g. `useradd --system {OS_USER}`)"
            ) from None
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root, but `runuser` (util-linux) is not installed")

    def server_command(self, args: Sequence[str]) -> list[str]:
        """args as the server's OS user runs them (PostgreSQL refuses to run as root): for a
        caller that starts server processes of its own, as bench/capture_instructions.py does."""
        return [*(["runuser", "-u", OS_USER, "--"] if self._as_os_user else []), *args]

    def _chown(self, path: Path, *, recursive: bool = True) -> None:
        """Hand files to the server's OS user; a no-op unless we are root."""
        if not self._as_os_user:
            return
        entry = pwd.getpwnam(OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        if recursive and path.is_dir():
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)

    def _make_base(self) -> None:
        if self._requested_base is None:
            base = Path(tempfile.mkdtemp(prefix="rewind-pg-"))
            owns = True
        else:
            base = self._requested_base.absolute()
            owns = not base.exists()
            base.mkdir(parents=True, exist_ok=True)
            for leftover in (base / "data", base / "run"):
                if leftover.exists():
                    raise RuntimeError(f"{leftover} already exists; pick an empty base_dir")
        socket_path = base / "run" / ".s.PGSQL.65535"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            if owns:
                shutil.rmtree(base, ignore_errors=True)
            raise ValueError(f"base_dir {base} is too long for a unix socket path; choose a shorter one")
        (base / "run").mkdir(mode=0o700)
        self._base = base
        self._owns_base = owns
        # Recursive only for a directory we made: a caller's directory may hold files of their own.
        self._chown(base, recursive=owns)
        self._chown(base / "run")

    def _initdb(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self._password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        args = [
            self.bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
            "-E", "UTF8", "--no-sync",
        ]  # fmt: skip
        try:
            try:
                self._run([*args, "--locale=C.UTF-8"], timeout=300)
            except _CommandFailed as exc:
                if "locale" not in exc.output.lower():
                    raise RuntimeError(f"initdb failed: {exc}") from None
                # Minimal systems may lack C.UTF-8; the C locale still stores UTF-8 text correctly.
                shutil.rmtree(self.data_dir, ignore_errors=True)
                try:
                    self._run([*args, "--no-locale"], timeout=300)
                except _CommandFailed as exc2:
                    raise RuntimeError(f"initdb failed: {exc2}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write(f"\n# Added by rewind.devdb\ninclude '{_CONF_NAME}'\n")

    def _write_conf(self, port: int) -> None:
        lines = [
            "# Written by rewind.devdb on every start; ALTER SYSTEM (postgresql.auto.conf) still wins.",
            f"listen_addresses = {_conf_quote(HOST)}",
            f"port = {port}",
            f"unix_socket_directories = {_conf_quote(str(self.socket_dir))}",
            *(f"{name} = {_conf_quote(value)}" for name, value in self._settings.items()),
        ]
        path = self.data_dir / _CONF_NAME
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._chown(path)

    def _launch(self) -> None:
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else _free_port()
            self._port = port
            self._write_conf(port)
            offset = self._log_size()
            cmd = [
                self.bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", str(_START_TIMEOUT_S), "start",
            ]  # fmt: skip
            try:
                self._run(cmd, timeout=_START_TIMEOUT_S * 2)
                return
            except (_CommandFailed, subprocess.TimeoutExpired) as exc:
                if attempt < attempts and "already in use" in self._log_since(offset):
                    continue  # lost the race for the port to another process
                raise RuntimeError(self._startup_error("start", exc, offset)) from None

    def _run(self, args: Sequence[str], *, timeout: float) -> str:
        cmd = self.server_command(args)
        proc = subprocess.run(
            cmd,
            cwd=self._base,  # the server's OS user may not be allowed into our working directory
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise _CommandFailed(cmd, proc.returncode, proc.stdout)
        return proc.stdout

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _startup_error(self, what: str, exc: Exception, offset: int) -> str:
        tail = "\n".join(self._log_since(offset).splitlines()[-30:]) or "(empty)"
        return f"PostgreSQL {what} failed: {exc}\n--- tail of {self.log_file} ---\n{tail}"

    @staticmethod
    def _kill_postmaster(pidfile: Path) -> None:
        """Last resort when pg_ctl cannot stop the server: SIGQUIT is the postmaster's immediate stop."""
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, wait_s in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def _remove_files(self, base: Path) -> None:
        if self._owns_base:
            shutil.rmtree(base, ignore_errors=True)
            return
        # A caller-supplied directory may hold other things: remove only what we created.
        for name in ("data", "run"):
            shutil.rmtree(base / name, ignore_errors=True)
        for name in ("postgres.log", "pwfile"):
            (base / name).unlink(missing_ok=True)


# ----------------------------------------------------------------- cleanup at exit and on signals

_Handler: TypeAlias = Callable[[int, types.FrameType | None], object] | int | signal.Handlers | None

_live: set[Cluster] = set()
_live_lock = threading.Lock()
_atexit_installed = False
_previous_handlers: dict[int, _Handler] = {}


def _register(cluster: Cluster) -> None:
    global _atexit_installed
    with _live_lock:
        _live.add(cluster)
        if not _atexit_installed:
            atexit.register(_stop_all)
            _atexit_installed = True
    _install_signal_handlers()


def _unregister(cluster: Cluster) -> None:
    with _live_lock:
        _live.discard(cluster)


def _stop_all() -> None:
    with _live_lock:
        clusters = list(_live)
    for cluster in clusters:
        with contextlib.suppress(Exception):
            cluster.stop()


def _install_signal_handlers() -> None:
    # signal.signal() only works in the main thread; clusters started elsewhere rely on atexit.
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum in _previous_handlers:
            continue  # installed once: re-installing could make a chaining handler call itself
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN or previous is None:
            continue  # the signal cannot end the process (or is handled outside Python): leave it
        signal.signal(signum, _on_signal)
        _previous_handlers[signum] = previous


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    _stop_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


# ------------------------------------------------------------------------------------ command line


def _parse_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rewind.devdb",
        description="Start a throwaway PostgreSQL cluster, print its DSN, delete it on Ctrl-C.",
    )
    parser.add_argument("--port", type=int, help="TCP port (default: a free one)")
    parser.add_argument("--password", default="rewind-dev", help="password of the postgres superuser")
    parser.add_argument("--base-dir", type=Path, help="directory for data, socket and log (default: temp)")
    parser.add_argument(
        "-c", dest="settings", type=_parse_setting, action="append", default=[], metavar="NAME=VALUE",
        help="server setting, may be repeated",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        cluster = Cluster(port=args.port, settings=dict(args.settings), base_dir=args.base_dir, password=args.password)
        cluster.start()
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with cluster:
            print(cluster.dsn(), flush=True)
            print(
                f"PostgreSQL running: data {cluster.data_dir}, log {cluster.log_file}\n"
                f"  psql: {cluster.bin('psql')} '{cluster.dsn()}'\n"
                "Press Ctrl-C to stop it and delete its data.",
                file=sys.stderr,
                flush=True,
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
