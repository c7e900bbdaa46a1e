"""The scheduler: cron jobs from rewind.toml fire (a one-second schedule here), runs are logged
and counted in Prometheus metrics, jobs live in a persistent SQLAlchemy job store."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import rewind, rewind_json

from backup import config as backup_config
from backup import list_snapshots, open_store
from backup import schedule as sched


def _config(tmp_path: Path, schedule: str) -> Path:
    path = tmp_path / "rewind.toml"
    path.write_text(f"""
[backup]
store = "{(tmp_path / 'store').as_uri()}"

[backup.retention]
keep_last = 2

[backup.schedule]
{schedule}
jobstore = "sqlite:///{tmp_path / 'jobs.sqlite'}"
""")
    return path


def test_schedule_fires_jobs_logs_and_counts(dsn: str, conn: psycopg.Connection[Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    conn.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
    monkeypatch.setenv("REWIND_DSN", dsn)
    path = _config(tmp_path, 'create = "* * * * * *"\nverify = "0 0 1 1 *"')
    cfg = backup_config.load(path)
    before = sched.REGISTRY.get_sample_value("rewind_backup_job_runs_total", {"job": "create", "outcome": "success"})
    scheduler = sched.start_scheduler(cfg)
    try:
        job = scheduler.get_job("backup-create")
        assert job.coalesce is True and job.max_instances == 1
        store = open_store(cfg.store or "")
        deadline = time.monotonic() + 60
        while not list_snapshots(store) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.shutdown(wait=True)
    assert list_snapshots(store), [r.detail for r in sched.HISTORY]
    runs = [r for r in sched.HISTORY if r.job == "create"]
    assert runs and runs[-1].ok and runs[-1].duration_s > 0
    after = sched.REGISTRY.get_sample_value("rewind_backup_job_runs_total", {"job": "create", "outcome": "success"})
    assert after is not None and after > (before or 0)
    assert sched.REGISTRY.get_sample_value("rewind_backup_job_last_success_timestamp_seconds", {"job": "create"})
    with sqlite3.connect(tmp_path / "jobs.sqlite") as db:  # persisted, with no secrets in it
        ids = sorted(r[0] for r in db.execute("SELECT id FROM rewind_backup_jobs"))
        blob = b"".join(r[0] for r in db.execute("SELECT job_state FROM rewind_backup_jobs"))
    assert ids == ["backup-create", "backup-verify"]
    assert dsn.encode() not in blob and b"rewind-dev" not in blob


def test_failed_runs_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REWIND_DSN", raising=False)
    path = _config(tmp_path, 'create = "0 * * * *"')
    result = sched.run_job("create", str(path))
    assert result["ok"] is False and "no database" in result["error"]
    assert sched.REGISTRY.get_sample_value("rewind_backup_job_failures_total", {"job": "create"})
    assert sched.run_job("prune", str(path))["ok"] is True


def test_schedule_shows_next_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, 'create = "15 * * * *"\nprune = "0 4 * * *"')
    code, runs = rewind_json(capsys, "backup", "--config", str(path), "schedule")
    assert code == 0
    assert [(r["job"], r["cron"]) for r in runs] == [("create", "15 * * * *"), ("prune", "0 4 * * *")]
    assert ":15:00" in runs[0]["next_run"] and "04:00:00" in runs[1]["next_run"]
    bad = _config(tmp_path, 'create = "every hour"')
    code, out, err = rewind(capsys, "backup", "--config", str(bad), "schedule")
    assert code == 2 and "bad cron expression" in err
