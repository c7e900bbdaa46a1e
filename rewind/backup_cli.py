"""`rewind backup ...`: a thin Typer layer over the backup library."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

import backup
from backup import config as backup_config
from journal.errors import BadInput, Refused
from rewind import output

backup_app = typer.Typer(no_args_is_help=True, help="Snapshots to a local directory or S3, proven restorable.")

StoreUrl = Annotated[str | None, typer.Option("--store", envvar="REWIND_BACKUP_STORE", show_envvar=True,
                                              help="file:///absolute/path or s3://bucket/prefix.")]
Dsn = Annotated[str | None, typer.Option("--dsn", envvar="REWIND_DSN", show_envvar=True,
                                         help="Database to snapshot (postgresql://...). Shown masked.")]
Json = Annotated[bool, typer.Option("--json", help="JSON on stdout, nothing else.")]

_state: dict[str, Any] = {}


@backup_app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", help="rewind.toml (default ./rewind.toml, "
                                                "or REWIND_CONFIG).")] = None,
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="S3 endpoint (MinIO, Ceph, R2); "
                                                     "default from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.")] = None,
    path_style: Annotated[bool | None, typer.Option("--path-style/--virtual-hosted",
                                                    help="S3 addressing style.")] = None,
    sse: Annotated[str | None, typer.Option("--sse", help="Server-side encryption: AES256 or aws:kms.")] = None,
    kms_key_id: Annotated[str | None, typer.Option("--kms-key-id", help="KMS key for --sse aws:kms.")] = None,
    lock_mode: Annotated[str | None, typer.Option("--lock-mode", help="Object Lock: GOVERNANCE or "
                                                  "COMPLIANCE.")] = None,
    lock_days: Annotated[int | None, typer.Option("--lock-days", min=1,
                                                  help="Object Lock retention in days.")] = None,
) -> None:
    """Store settings given here override [backup.s3] in rewind.toml."""
    cfg = backup_config.load(config)
    opts = cfg.s3
    overrides: dict[str, Any] = {k: v for k, v in {"endpoint_url": endpoint_url, "path_style": path_style, "sse": sse,
                                   "kms_key_id": kms_key_id, "lock_mode": lock_mode,
                                   "lock_days": lock_days}.items() if v is not None}
    cfg.s3 = replace(opts, **overrides)
    if cfg.s3.sse not in (None, "AES256", "aws:kms"):
        raise BadInput(f"--sse {cfg.s3.sse!r}: use AES256 (SSE-S3) or aws:kms (SSE-KMS)")
    if cfg.s3.lock_mode is not None and cfg.s3.lock_mode.upper() not in ("GOVERNANCE", "COMPLIANCE"):
        raise BadInput(f"--lock-mode {cfg.s3.lock_mode!r}: use GOVERNANCE or COMPLIANCE")
    _state["config"] = cfg


def _config() -> backup_config.BackupConfig:
    cfg = _state.get("config")
    return cfg if isinstance(cfg, backup_config.BackupConfig) else backup_config.load()


def _store(url: str | None) -> backup.Store:
    cfg = _config()
    url = url or cfg.store
    if not url:
        raise BadInput("no store given: pass --store, set REWIND_BACKUP_STORE, or [backup] store in rewind.toml")
    return backup.open_store(url, cfg.s3)


def _dsn(dsn: str | None) -> str:
    dsn = dsn or _config().dsn
    if not dsn:
        raise BadInput("no database given: pass --dsn or set REWIND_DSN")
    return dsn


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[backup.stores.Progress | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=output.err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda n: bar.advance(task, n)


@backup_app.command()
def create(dsn: Dsn = None, store: StoreUrl = None, as_json: Json = False) -> None:
    """Take a snapshot: pg_dump under an exported snapshot, counts and hashes per table, manifest last."""
    target, st = _dsn(dsn), _store(store)
    with _progress(not as_json, "uploading") as progress:
        snap = backup.create_snapshot(target, st, progress=progress)
    if as_json:
        output.emit_json(snap.as_json())
    else:
        info = snap.as_json()
        output.out.print(f"snapshot [bold]{snap.id}[/] of {info['database']}: {info['tables']} table(s), "
                         f"{info['rows']} row(s), {info['bytes']} bytes in {st.url}")


@backup_app.command(name="list")
def list_cmd(store: StoreUrl = None, as_json: Json = False) -> None:
    """Snapshots, newest first, with the outcome of their latest verification."""
    st = _store(store)
    st.preflight()
    snaps = backup.list_snapshots(st)
    if as_json:
        output.emit_json([s.as_json() for s in snaps])
        return
    if not snaps:
        output.out.print(f"no snapshots in {st.url}")
        return
    from rich.table import Table

    table = Table(title=f"snapshots in {st.url} (newest first)")
    for col in ("id", "created", "bytes", "tables", "verified"):
        table.add_column(col)
    for s in snaps:
        verified = {True: "[green]yes[/]", False: "[bold red]FAILED[/]", None: "never"}[s.verified]
        table.add_row(s.id, s.created_at.strftime("%Y-%m-%d %H:%M:%S%z"), str(s.bytes), str(s.tables or "?"),
                      verified)
    output.out.print(table)


@backup_app.command()
def verify(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id, or latest.")] = "latest",
    store: StoreUrl = None,
    scratch_dsn: Annotated[str | None, typer.Option("--scratch-dsn", envvar="REWIND_SCRATCH_DSN",
                                                    help="Server (and database to connect to) where a scratch "
                                                         "database is created and dropped; default: --dsn.")] = None,
    dsn: Dsn = None,
    check: Annotated[list[Path] | None, typer.Option("--check", help="SQL file that must return a single true; "
                                                     "repeatable.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="pg_restore parallel jobs.")] = 1,
    as_json: Json = False,
) -> None:
    """Restore a snapshot into a scratch database and prove its content matches the manifest."""
    cfg = _config()
    server = scratch_dsn or cfg.scratch_dsn or dsn or cfg.dsn
    if not server:
        raise BadInput("no scratch server given: pass --scratch-dsn (or --dsn / REWIND_DSN)")
    st = _store(store)
    result = backup.verify_snapshot(st, snapshot, server, checks=[*cfg.checks, *(check or [])], jobs=jobs)
    if not result.ok:
        raise Refused(f"snapshot {result.id} failed verification: " + "; ".join(result.problems),
                      payload=result.as_json())
    if as_json:
        output.emit_json(result.as_json())
    else:
        output.out.print(f"snapshot [bold]{result.id}[/] verified: restored {result.tables} table(s), "
                         f"{result.rows} row(s) match the manifest; {len(result.checks)} check(s) passed "
                         f"({result.duration_s:.1f}s)")


@backup_app.command(name="check-store")
def check_store(store: StoreUrl = None, as_json: Json = False) -> None:
    """Write a small locked object and try to delete its version: is immutability enforced? Exit 1 if not."""
    report = backup.check_store(_store(store))
    if not report["enforced"]:
        raise Refused(f"{report['store']}: immutability NOT enforced: {report['detail']}", payload=report)
    if as_json:
        output.emit_json(report)
    else:
        output.out.print(f"{report['store']}: immutability enforced: {report['detail']}")


@backup_app.command()
def prune(store: StoreUrl = None,
          keep_last: Annotated[int | None, typer.Option("--keep-last", help="Keep the newest N.")] = None,
          keep_daily: Annotated[int | None, typer.Option("--keep-daily", help="Newest of each of the last N "
                                                         "days that have one.")] = None,
          keep_weekly: Annotated[int | None, typer.Option("--keep-weekly", help="Newest of each of N weeks.")] = None,
          keep_monthly: Annotated[int | None, typer.Option("--keep-monthly", help="Newest of each of N "
                                                           "months.")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
          as_json: Json = False) -> None:
    """Grandfather-father-son retention; never deletes the newest verified snapshot."""
    cfg = _config()
    given = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
             "keep_monthly": keep_monthly}
    rule = backup.Retention(**{k: (v if v is not None else cfg.retention.get(k, 0)) for k, v in given.items()})
    result = backup.prune(_store(store), rule, dry_run=dry_run)
    if as_json:
        output.emit_json(result.as_json())
        return
    for snap_id, reasons in result.keep.items():
        output.out.print(f"keep   {snap_id}  ({', '.join(reasons)})")
    for snap_id in result.delete:
        if dry_run:
            output.out.print(f"delete {snap_id}  (dry run)")
        elif snap_id in result.locked:
            output.out.print(f"kept   {snap_id}  [yellow]{result.locked[snap_id]}[/]")
        else:
            output.out.print(f"[red]deleted[/] {snap_id}")
    for snap_id in result.interrupted:
        state = "(dry run)" if dry_run else result.locked.get(snap_id, "removed")
        output.out.print(f"debris {snap_id}  interrupted create, no manifest: {state}")
    for name in result.staging:
        output.out.print(f"debris {name}  staging left by a killed run: removed")


schedule_app = typer.Typer(help="Cron schedules for create, verify and prune from rewind.toml [backup.schedule].")
backup_app.add_typer(schedule_app, name="schedule")


@schedule_app.callback(invoke_without_command=True)
def schedule(ctx: typer.Context, as_json: Json = False) -> None:
    """Show each scheduled job's cron expression and next run time."""
    if ctx.invoked_subcommand is not None:
        return
    from backup import schedule as sched

    runs = sched.next_runs(_config())
    if as_json:
        output.emit_json(runs)
    elif not runs:
        output.out.print("no jobs: add cron expressions under [backup.schedule] in rewind.toml")
    for r in [] if as_json else runs:
        output.out.print(f"{r['job']:7} {r['cron']:20} next run {r['next_run']:%Y-%m-%d %H:%M:%S %Z}")


@schedule_app.command(name="run")
def schedule_run(
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on "
                                                     "127.0.0.1:PORT.")] = None,
    jobstore: Annotated[str | None, typer.Option("--jobstore", help="SQLAlchemy URL of the persistent job "
                                                 "store (default [backup.schedule] jobstore).")] = None,
) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C."""
    import os
    import signal
    import threading

    from backup import schedule as sched
    from rewind import logs

    cfg = _config()
    # serve's formatter: every line masks the configured DSNs and the job store, whatever logs them
    logs.configure("text", secrets=[cfg.dsn, cfg.scratch_dsn, jobstore or cfg.jobstore, os.environ.get("REWIND_DSN")])
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=sched.REGISTRY)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    scheduler = sched.start_scheduler(cfg, jobstore=jobstore)
    for r in sched.next_runs(cfg):
        output.err.print(f"{r['job']:7} {r['cron']:20} next run {r['next_run']:%Y-%m-%d %H:%M:%S %Z}")
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
