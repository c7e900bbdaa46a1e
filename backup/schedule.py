"""Scheduled create, verify and prune: APScheduler with cron expressions from rewind.toml, a
persistent SQLAlchemy job store, coalesced misfires, one run of a job at a time, every run logged
with its outcome and duration and exposed as Prometheus metrics.

Jobs carry only their name and the config file's path, never a DSN or a key: the job store is a
file on disk. Each run re-reads rewind.toml and the environment (REWIND_DSN, AWS_*).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backup import config as backup_config
from journal.connection import mask_dsn, mask_text
from journal.errors import BadInput, RewindError

log = logging.getLogger("rewind.backup.schedule")

REGISTRY = CollectorRegistry()
RUNS = Counter("rewind_backup_job_runs", "Scheduled backup job runs by outcome.", ["job", "outcome"],
               registry=REGISTRY)
FAILURES = Counter("rewind_backup_job_failures", "Scheduled backup job runs that failed.", ["job"],
                   registry=REGISTRY)
DURATION = Histogram("rewind_backup_job_duration_seconds", "Duration of scheduled backup job runs.", ["job"],
                     buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, float("inf")), registry=REGISTRY)
LAST_SUCCESS = Gauge("rewind_backup_job_last_success_timestamp_seconds", "Unix time of the job's last success.",
                     ["job"], registry=REGISTRY)
LAST_RUN = Gauge("rewind_backup_job_last_run_timestamp_seconds", "Unix time of the job's last run.", ["job"],
                 registry=REGISTRY)


@dataclass
class RunRecord:
    job: str
    ok: bool
    started_at: datetime
    duration_s: float
    detail: str


HISTORY: list[RunRecord] = []  # this process's runs, newest last

# The database `rewind serve` streams: the jobs' last resort when neither REWIND_DSN nor [backup]
# dsn names one. Kept in memory only, never in the job store.
_served_dsn: str | None = None


def trigger(expr: str) -> CronTrigger:
    """Five fields (minute hour day month weekday) as crontab, or six with seconds first."""
    fields = expr.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expr, timezone=UTC)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow,
                               timezone=UTC)
    except ValueError as exc:
        raise BadInput(f"bad cron expression {expr!r}: {exc}") from None
    raise BadInput(f"bad cron expression {expr!r}: use 5 fields (minute hour day month weekday) or 6 "
                   "(second first)")


def next_runs(cfg: backup_config.BackupConfig) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"job": name, "cron": expr, "next_run": trigger(expr).get_next_fire_time(None, now)}
            for name, expr in sorted(cfg.schedule.items())]


def run_job(name: str, config_path: str | None) -> dict[str, Any]:
    """One scheduled run; referenced by name from the job store, so it must stay importable here."""
    from backup.catalog import list_snapshots
    from backup.retention import Retention, prune
    from backup.snapshot import create_snapshot
    from backup.stores import open_store
    from backup.verify import verify_snapshot

    started = datetime.now(UTC)
    t0 = time.monotonic()
    detail: dict[str, Any] = {}
    ok = False
    try:
        cfg = backup_config.load(Path(config_path) if config_path else None)
        if not cfg.store:
            raise BadInput("no [backup] store in rewind.toml")
        store = open_store(cfg.store, cfg.s3)
        dsn = os.environ.get("REWIND_DSN") or cfg.dsn or _served_dsn
        if name == "create":
            if not dsn:
                raise BadInput("no database: set REWIND_DSN or [backup] dsn")
            detail = {"id": create_snapshot(dsn, store).id}
            ok = True
        elif name == "verify":
            server = os.environ.get("REWIND_SCRATCH_DSN") or cfg.scratch_dsn or dsn
            if not server:
                raise BadInput("no scratch server: set REWIND_SCRATCH_DSN, [backup] scratch_dsn or dsn")
            if not list_snapshots(store, with_verified=False):
                detail = {"skipped": "no snapshots yet"}
                ok = True
            else:
                res = verify_snapshot(store, "latest", server, checks=cfg.checks)
                detail = {"id": res.id, "problems": res.problems}
                ok = res.ok
        elif name == "prune":
            pr = prune(store, Retention(**cfg.retention))
            detail = {"deleted": pr.deleted, "locked": list(pr.locked)}
            ok = True
        else:
            raise BadInput(f"unknown job {name!r}")
    except RewindError as exc:
        detail = {"error": str(exc)}
    except Exception as exc:  # a scheduled run must log and carry on, whatever went wrong
        detail = {"error": f"{type(exc).__name__}: {exc}"}
    duration = time.monotonic() - t0
    outcome = "success" if ok else "failure"
    RUNS.labels(name, outcome).inc()
    DURATION.labels(name).observe(duration)
    LAST_RUN.labels(name).set(time.time())
    if ok:
        LAST_SUCCESS.labels(name).set(time.time())
    else:
        FAILURES.labels(name).inc()
    HISTORY.append(RunRecord(name, ok, started, round(duration, 3), str(detail)))
    (log.info if ok else log.error)("backup job %s %s in %.2fs: %s", name, outcome, duration, detail)
    return {"job": name, "ok": ok, "duration_s": round(duration, 3), **detail}


def check_jobstore(url: str | None) -> None:
    """A one-line BadInput, before anything starts, when the job store cannot be opened: a bad
    URL, a missing driver, an unreachable database."""
    if not url:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        engine = create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise BadInput(f"unusable job store {mask_dsn(url)}: {mask_text(str(exc), url)}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        reason = " ".join(mask_text(str(orig if orig is not None else exc), url).split())
        raise BadInput(f"cannot open job store {mask_dsn(url)}: {reason}") from None
    finally:
        engine.dispose()


def start_scheduler(cfg: backup_config.BackupConfig, *, jobstore: str | None = None,
                    served_dsn: str | None = None) -> BaseScheduler:
    """A started background scheduler with one job per [backup.schedule] entry, in a persistent
    job store when one is configured (jobstore = "sqlite:///path" or any SQLAlchemy URL).
    served_dsn: the database of the `rewind serve` that runs the scheduler, used when the
    environment and rewind.toml name none."""
    global _served_dsn
    if not cfg.schedule:
        raise BadInput("no jobs: add cron expressions under [backup.schedule] in rewind.toml "
                       "(create, verify, prune)")
    url = jobstore or cfg.jobstore
    check_jobstore(url)
    store = SQLAlchemyJobStore(url=url, tablename="rewind_backup_jobs") if url else MemoryJobStore()
    sched = BackgroundScheduler(jobstores={"default": store}, timezone=UTC,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
    config_path = str(cfg.path.resolve()) if cfg.path else None
    wanted = {f"backup-{n}" for n in cfg.schedule}
    for name, expr in sorted(cfg.schedule.items()):
        sched.add_job("backup.schedule:run_job", trigger(expr), args=[name, config_path], id=f"backup-{name}",
                      name=f"backup {name}", replace_existing=True)
    sched.start(paused=True)
    for job in sched.get_jobs():  # jobs removed from rewind.toml leave the persistent store too
        if job.id.startswith("backup-") and job.id not in wanted:
            job.remove()
    _served_dsn = served_dsn
    sched.resume()
    return sched
