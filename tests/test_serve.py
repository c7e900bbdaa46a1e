"""`rewind serve` as operators run it: a child process against the throwaway cluster, probed over
real HTTP. It becomes live then ready, counts a tracked write in /metrics, runs the backup
schedule of its rewind.toml, answers 503 while it cannot stream, stops cleanly on SIGTERM with
the write in the mirror, logs JSON without secrets, and turns bad input away with one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import connect_as, rewind, rewind_json
from prometheus_client.parser import text_string_to_metric_families
from stream_helpers import RewindProcess, mirror_checkpoint, mirror_rows, mirror_scalar, slot_lsns, wait_for

import journal
from backup import list_snapshots, open_store
from journal.replication import open_stream
from rewind.devdb import Cluster
from rewind.priority import autogroup_nice

_PORT = re.compile(r"http://127\.0\.0\.1:(\d+)")
needs_autogroup = pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists()
    or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
    reason="the kernel does not group by session (no autogroup)")


@pytest.fixture
def shop(dsn: str, conn: psycopg.Connection[Any]) -> str:
    conn.execute("CREATE TABLE orders (id int PRIMARY KEY, qty int)")
    journal.init(dsn)
    journal.track(dsn, ["public.orders"])
    return dsn


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None, port: int = 0,
          new_session: bool = False) -> tuple[RewindProcess, str]:
    """`rewind serve ARGS --http 127.0.0.1:PORT`, and its base URL once it has said where it listens."""
    proc = RewindProcess(["serve", "--http", f"127.0.0.1:{port}", *args], tmp_path / f"serve-{port}.log", env=env,
                         new_session=new_session)

    def port() -> str | None:
        assert proc.proc.poll() is None, proc.output()
        found = _PORT.search(proc.output())
        return found[1] if found else None
    return proc, f"http://127.0.0.1:{wait_for(port, what='the serving line')}"


def thread_nice(pid: int) -> dict[str, int]:
    """The nice value of a process's main thread and the highest of its other threads."""
    values = {int(stat.parent.name): nice_of(stat) for stat in Path(f"/proc/{pid}/task").glob("*/stat")}
    return {"main": values.pop(pid), "stream": max(values.values())}


def nice_of(stat: Path) -> int:
    """The nice value in a /proc .../stat file: field 19, the 17th after the command name."""
    return int(stat.read_text().rsplit(")", 1)[1].split()[16])


def group_nice(pid: int) -> int | None:
    """The nice value of a process's session group (Linux autogroup); None in the boot-time
    default group, as under a CI runner that never started a session."""
    return autogroup_nice(Path(f"/proc/{pid}/autogroup").read_text())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(base + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def metric(base: str, name: str, **labels: str) -> float | None:
    return metrics(base).get((name, tuple(sorted(labels.items()))))


def test_serve_streams_reports_and_stops_cleanly(shop: str, tmp_path: Path, pg_cluster: Cluster,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    journal_url = f"sqlite:///{tmp_path}/journal.sqlite"
    (tmp_path / "rewind.toml").write_text(f'[serve]\njournal = "{journal_url}"\nheartbeat_seconds = 0.3\n'
                                          'log_format = "text"\n')
    # the database and the log format from the environment, the mirror from the file, --http over REWIND_HTTP
    env = {**os.environ, "REWIND_DSN": shop, "REWIND_LOG_FORMAT": "json", "REWIND_HTTP": "not an address"}
    proc, base = start(tmp_path, "--config", str(tmp_path / "rewind.toml"), env=env)
    try:
        assert get(base + "/healthz")[0] == 200
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="/readyz 200")
        assert json.loads(get(base + "/readyz")[1])["ready"] is True
        before = metric(base, "rewind_stream_changes_total")
        assert before is not None
        with connect_as(shop, "agent-7") as a:
            a.execute("INSERT INTO orders SELECT g, g FROM generate_series(1, 3) g")
        wait_for(lambda: (metric(base, "rewind_stream_changes_total") or 0) >= before + 3, what="changes counted")
        wait_for(lambda: metric(base, "rewind_stream_lag_bytes") is not None, what="lag measured")
        seen = metrics(base)
        assert seen[("rewind_stream_ready", ())] == 1
        assert seen[("rewind_stream_lag_seconds", ())] >= 0
        assert seen[("rewind_stream_last_commit_timestamp_seconds", ())] > 1.7e9
        assert seen[("rewind_stream_mirror_errors_total", ())] == 0
        assert seen[("rewind_stream_gaps_total", ())] == 0
        assert ("rewind_stream_transactions_total", ()) in seen
        assert thread_nice(proc.proc.pid) == {"main": 0, "stream": 10}  # the stream yields CPU to PostgreSQL
        # started from this session (as from a terminal), it leaves the session's group alone
        assert group_nice(proc.proc.pid) == group_nice(os.getpid())
    finally:
        code = proc.terminate(timeout=10)
    log = proc.output()
    assert code == 0, log[-3000:]
    code, actions = rewind_json(capsys, "actions", "--journal", journal_url, "--actor", "agent-7")
    assert code == 0 and [a["changes"] for a in actions] == [3]
    confirmed = slot_lsns(shop)  # the stop confirmed to the slot what the mirror holds
    assert confirmed is not None and confirmed[0] >= (mirror_checkpoint(journal_url) or 0) > 0

    lines = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    serving = next(e for e in lines if e["message"].startswith("serving"))
    assert serving["slot"].startswith("rewind_") and "***" in serving["dsn"]
    assert any(e["message"].startswith("stopped after 3 change") for e in lines)
    assert pg_cluster.password not in log


@needs_autogroup
def test_serve_as_a_service_lowers_its_whole_session_below_postgres(shop: str, tmp_path: Path) -> None:
    """Every PostgreSQL backend leads a session, hence a scheduling group, of its own: a thread's
    nice counts only inside its group, so a sidecar in a session of its own (a service) must lower
    the group's to yield to the database."""
    proc, base = start(tmp_path, "--dsn", shop, "--journal", f"sqlite:///{tmp_path}/journal.sqlite", "--nice", "7",
                       new_session=True)
    try:
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="/readyz 200")
        with psycopg.connect(shop, autocommit=True) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            assert group_nice(backend) == 0  # PostgreSQL's side keeps normal priority
        assert group_nice(proc.proc.pid) == 7
        assert thread_nice(proc.proc.pid) == {"main": 0, "stream": 7}
    finally:
        code = proc.terminate(timeout=10)
    assert code == 0
    assert "session priority lowered: autogroup nice 7" in proc.output()


@needs_autogroup
def test_stream_as_a_service_lowers_its_session_too(shop: str, tmp_path: Path) -> None:
    proc = RewindProcess(["stream", "--dsn", shop, "--journal", f"sqlite:///{tmp_path}/journal.sqlite"],
                         tmp_path / "stream.log", new_session=True)
    try:
        wait_for(lambda: "session priority lowered: autogroup nice 10" in proc.output(), what="the priority line")
        assert group_nice(proc.proc.pid) == 10  # the default
        assert nice_of(Path(f"/proc/{proc.proc.pid}/stat")) == 10  # and its main thread, which streams
    finally:
        code = proc.terminate(timeout=10)
    assert code == 0, proc.output()


def test_kill_9_then_restart_on_the_same_port_loses_and_duplicates_nothing(shop: str, tmp_path: Path) -> None:
    journal_url = f"sqlite:///{tmp_path}/journal.sqlite"
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    args = ("--dsn", shop, "--journal", journal_url, "--heartbeat-seconds", "0.3")

    def write(first: int) -> None:
        with connect_as(shop, "agent-7") as a:
            a.execute("INSERT INTO orders SELECT g, 1 FROM generate_series(%s::int, %s::int) g", (first, first + 999))

    proc, base = start(tmp_path, *args, port=port)
    wait_for(lambda: get(base + "/readyz")[0] == 200, what="/readyz 200")
    write(1)
    wait_for(lambda: metric(base, "rewind_stream_changes_total") == 1000, what="the first thousand")
    write(1001)  # racing the kill: mirrored before it, or replayed after the restart
    proc.kill()
    write(2001)  # while nobody streams
    proc, base = start(tmp_path, *args, port=port)  # a supervisor restarts it at once: the port is free again
    try:
        wait_for(lambda: mirror_scalar(journal_url, "SELECT count(*) FROM rewind_change") >= 3000,
                 what="every change after the restart")
    finally:
        code = proc.terminate(timeout=10)
    assert code == 0, proc.output()[-3000:]
    assert tuple(mirror_rows(journal_url, "SELECT count(*), count(DISTINCT id) FROM rewind_change")[0]) == (3000, 3000)


def test_readyz_is_503_until_the_stream_runs(shop: str, tmp_path: Path) -> None:
    """Another consumer holds the slot: the process is alive, not ready; it becomes ready as soon
    as the slot is free."""
    slot = journal.create_stream_slot(shop)
    holder = open_stream(shop, slot, start_lsn=0)
    proc, base = start(tmp_path, "--dsn", shop, "--journal", f"sqlite:///{tmp_path}/j.sqlite",
                       "--heartbeat-seconds", "0.3")
    try:
        wait_for(lambda: "interrupted" in proc.output(), what="the stream to find the slot taken")
        assert get(base + "/healthz")[0] == 200
        status, body = get(base + "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert metric(base, "rewind_stream_ready") == 0
        holder.close()
        wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=20, what="/readyz 200 once the slot is free")
    finally:
        holder.close()
        code = proc.terminate(timeout=10, sig=signal.SIGINT)  # Ctrl-C stops as cleanly as SIGTERM
    assert code == 0, proc.output()[-3000:]


def test_serve_runs_the_backup_schedule(shop: str, tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    (tmp_path / "rewind.toml").write_text(f'[backup]\nstore = "{store}"\n\n[backup.schedule]\n'
                                          'create = "* * * * * *"\n')
    env = {k: v for k, v in os.environ.items() if k != "REWIND_DSN"}  # the served database is used
    proc, base = start(tmp_path, "--dsn", shop, "--journal", f"sqlite:///{tmp_path}/j.sqlite",
                       "--config", str(tmp_path / "rewind.toml"), env=env)
    try:
        wait_for(lambda: metric(base, "rewind_backup_job_runs_total", job="create", outcome="success"),
                 timeout=60, what="a scheduled create to succeed")
        assert metric(base, "rewind_backup_job_last_success_timestamp_seconds", job="create")
    finally:
        code = proc.terminate(timeout=30)
    assert code == 0, proc.output()[-3000:]
    assert list_snapshots(open_store(store))


def test_bad_input_is_one_line_exit_2(shop: str, tmp_path: Path, pg_cluster: Cluster,
                                      capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("REWIND_DSN", "REWIND_CONFIG", "REWIND_HTTP", "REWIND_JOURNAL"):
        monkeypatch.delenv(var, raising=False)
    sqlite = f"sqlite:///{tmp_path}/j.sqlite"
    taken = socket.create_server(("127.0.0.1", 0))
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[serve\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[serve]\nport = 1\n')
    cron = tmp_path / "cron.toml"
    cron.write_text(f'[backup]\nstore = "{tmp_path.as_uri()}"\n[backup.schedule]\ncreate = "hourly"\n')
    storeless = tmp_path / "storeless.toml"
    storeless.write_text('[backup.schedule]\ncreate = "0 * * * *"\n')
    jobstore = tmp_path / "jobstore.toml"  # an unreachable job store: found before the stream starts
    jobstore.write_text(f'[backup]\nstore = "{tmp_path.as_uri()}"\n[backup.schedule]\ncreate = "0 * * * *"\n'
                        'jobstore = "postgresql://u:pw-secret@127.0.0.1:1/jobs"\n')
    driverless = tmp_path / "driverless.toml"
    driverless.write_text(f'[backup]\nstore = "{tmp_path.as_uri()}"\n[backup.schedule]\ncreate = "0 * * * *"\n'
                          'jobstore = "bogus://x"\n')
    wrong = shop.replace(pg_cluster.password, "wrong-secret")
    cases: list[tuple[list[str], str]] = [
        ([], "no database given"),
        (["--dsn", "postgresql://u:pw-secret@127.0.0.1:1/x", "--journal", sqlite], "127.0.0.1"),
        (["--dsn", wrong, "--journal", sqlite], "authentication"),
        (["--dsn", shop, "--http", "nowhere"], "--http"),
        (["--dsn", shop, "--http", "127.0.0.1:99999"], "out of range"),
        (["--dsn", shop, "--journal", sqlite, "--http", f"127.0.0.1:{taken.getsockname()[1]}"], "cannot listen"),
        (["--dsn", shop, "--config", str(tmp_path / "missing.toml")], "not found"),
        (["--dsn", shop, "--config", str(bad_toml)], "cannot read"),
        (["--dsn", shop, "--config", str(unknown)], "unknown [serve] setting"),
        (["--dsn", shop, "--config", str(cron)], "bad cron expression"),
        (["--dsn", shop, "--config", str(storeless)], "needs a [backup] store"),
        (["--dsn", shop, "--log-format", "xml"], "--log-format"),
        (["--dsn", shop, "--slot", "Bad-Name", "--journal", sqlite], "slot name"),
        (["--dsn", shop, "--journal", sqlite, "--config", str(jobstore)], "cannot open job store"),
        (["--dsn", shop, "--journal", sqlite, "--config", str(driverless)], "unusable job store"),
    ]
    try:
        for args, expected in cases:
            code, out, err = rewind(capsys, "serve", *args)
            assert code == 2, (args, err)
            assert expected in err and len(err.strip().splitlines()) == 1, (args, err)
            assert "pw-secret" not in err and "wrong-secret" not in err and pg_cluster.password not in err
    finally:
        taken.close()
    assert slot_lsns(shop) is None and not Path(tmp_path, "j.sqlite").exists()  # nothing started
