"""The `rewind` command: a thin Typer layer over the journal and restore libraries."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

import journal
import restore
from journal import BadInput, Selection, capture_check, mirror, parse_time
from journal.replication import check_slot_name
from rewind import config, logs, output, runner
from rewind.backup_cli import backup_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Journal every write to PostgreSQL, see what each agent did, and undo it.")
app.add_typer(backup_app, name="backup")

Dsn = Annotated[str, typer.Option("--dsn", envvar="REWIND_DSN", show_envvar=True,
                                  help="Target database (postgresql://...). Shown masked.")]
OptionalDsn = Annotated[str | None, typer.Option("--dsn", envvar="REWIND_DSN", show_envvar=True,
                                                 help="Target database (postgresql://...). Shown masked.")]
JournalUrl = Annotated[str | None, typer.Option("--journal", help="Read the journal's mirror (an SQLAlchemy URL, "
                                                "as written by `rewind stream`) instead of the database.")]
Json = Annotated[bool, typer.Option("--json", help="JSON on stdout, nothing else.")]
Actors = Annotated[list[str] | None, typer.Option("--actor", help="Actor glob (agent-*); repeatable.")]
Roles = Annotated[list[str] | None, typer.Option("--role", help="Database role; repeatable.")]
Runs = Annotated[list[str] | None, typer.Option("--run", help="Run id (rewind.run); repeatable.")]
BIGINT_MAX = 2**63 - 1  # ids are bigint: anything larger names nothing, and the database would only fail on it
ActionIds = Annotated[list[int] | None, typer.Option("--action", min=1, max=BIGINT_MAX,
                                                     help="Action id; repeatable.")]
Since = Annotated[str | None, typer.Option("--since", help="ISO-8601 or relative (15m, 2h, 3d).")]
Until = Annotated[str | None, typer.Option("--until", help="ISO-8601 or relative (15m, 2h, 3d).")]
Tables = Annotated[list[str] | None, typer.Option("--table", help="schema.table; repeatable.")]
OnConflict = Annotated[restore.Policy, typer.Option("--on-conflict", help="abort, skip or merge.")]
MaxRows = Annotated[int, typer.Option("--max-rows", min=0, help="Refuse an undo that would touch more rows.")]
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def _fingerprint(value: str | None) -> str | None:
    """A plan fingerprint as `rewind preview` prints it (16 hex digits); anything else is a typo,
    not a stale plan."""
    if value is not None and not _FINGERPRINT.fullmatch(value):
        raise BadInput(f"malformed plan fingerprint {value!r}: use the 16 hex digits `rewind preview` printed")
    return value


PlanFingerprint = Annotated[str | None, typer.Option("--plan", callback=_fingerprint, help="Fingerprint from "
                                                     "`rewind preview`; refused if the database moved since.")]


def _need(dsn: str | None) -> str:
    if not dsn:
        raise BadInput("no database given: pass --dsn (or set REWIND_DSN), or --journal URL")
    return dsn


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def _selection(dsn: str | None, actors: list[str] | None, roles: list[str] | None, runs: list[str] | None,
               actions: list[int] | None, since: str | None, until: str | None,
               tables: list[str] | None, journal_url: str | None = None) -> Selection:
    sel = Selection(actors=actors or [], roles=roles or [], runs=runs or [], actions=actions or [],
                    since=_time(since), until=_time(until))
    if journal_url is not None:
        if tables:
            sel.tables = mirror.tracked_ids(journal_url, tables)
        missing = mirror.unknown_actions(journal_url, actions) if actions else []
        if missing:
            raise BadInput("unknown action id: " + ", ".join(map(str, missing)))
        return sel
    if tables:
        with journal.connect(dsn) as conn:
            journal.schema.require_installed(conn)
            sel.tables = journal.tracked_ids(conn, tables)
    if actions:
        with journal.connect(dsn) as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM rewind.tx WHERE id = ANY(%s)", (actions,))}
            unknown = [str(a) for a in actions if a not in known]
            if unknown:
                raise BadInput("unknown action id: " + ", ".join(unknown))
    return sel


@app.command()
def init(dsn: Dsn, event_triggers: Annotated[bool, typer.Option(
        help="Install event triggers (DDL capture, tracking new tables); needs superuser.")] = True,
         slot: Annotated[bool, typer.Option("--slot", help="Also create the decoding stream's replication "
                                            "slot now (rewind stream creates it on first start otherwise).")] = False,
         slot_name: Annotated[str | None, typer.Option("--slot-name", help="Slot name (default "
                                                       "rewind_<database>).")] = None,
         as_json: Json = False) -> None:
    """Install or upgrade the rewind schema (Alembic migrations). Safe to run again."""
    if slot or slot_name:
        journal.check_stream_slot(dsn, slot_name)  # a bad slot name installs nothing
    res = journal.init(dsn, event_triggers=event_triggers)
    slot_created = journal.create_stream_slot(dsn, slot_name) if slot or slot_name else None
    if as_json:
        output.emit_json({"database": res.database, "revision": res.revision, "upgraded_from": res.upgraded_from,
                          "event_triggers": res.event_triggers, "slot": slot_created})
    elif res.upgraded_from == res.revision:
        output.out.print(f"rewind already at revision {res.revision} in {res.database}")
    else:
        output.out.print(f"rewind installed in {res.database} at revision {res.revision}")
    if slot_created and not as_json:
        output.out.print(f"replication slot {slot_created} ready")


@app.command()
def track(dsn: Dsn, tables: Annotated[list[str] | None, typer.Argument(help="schema.table ...")] = None,
          schema: Annotated[list[str] | None, typer.Option("--schema", help="Every table in a schema, "
                                                           "now and later.")] = None,
          all_: Annotated[bool, typer.Option("--all", help="Every user schema, now and later.")] = False,
          mode: Annotated[str | None, typer.Option("--mode", help="journal: triggers write the journal (the "
                                                       "default for new tables); stream: `rewind serve` journals "
                                                       "row images from WAL. Omitted: tables keep their mode.")] = None,
          slot: Annotated[str | None, typer.Option("--slot", help="Stream mode: the replication slot to keep WAL "
                                                   "in until `rewind serve` reads it (default "
                                                   "rewind_<database>).")] = None,
          as_json: Json = False) -> None:
    """Journal writes to tables."""
    result = journal.track(dsn, tables, schemas=schema, all_schemas=all_, mode=mode, slot=slot)
    if as_json:
        output.emit_json([t.as_json() for t in result])
    else:
        output.out.print(f"tracking {len(result)} table(s): " + ", ".join(
            t.table + (" (stream)" if t.mode == "stream" else "") for t in result))
        if mode == "stream":
            output.out.print("stream mode: `rewind serve` (or `rewind stream`) journals these tables' changes "
                             "from WAL; until it runs, the replication slot keeps that WAL")


@app.command()
def untrack(dsn: Dsn, tables: Annotated[list[str] | None, typer.Argument(help="schema.table ...")] = None,
            schema: Annotated[list[str] | None, typer.Option("--schema")] = None,
            all_: Annotated[bool, typer.Option("--all")] = False, as_json: Json = False) -> None:
    """Stop journaling tables; what was journaled stays."""
    result = journal.untrack(dsn, tables, schemas=schema, all_schemas=all_)
    if as_json:
        output.emit_json([t.as_json() for t in result])
    else:
        output.out.print(f"still tracking {len(result)} table(s)")


@app.command()
def status(dsn: Dsn, slot: Annotated[str | None, typer.Option("--slot", help="The stream's replication slot "
                                                               "(default rewind_<database>).")] = None,
           check: Annotated[bool, typer.Option("--check", help="Exit 1 when there are capture gaps, or lag "
                                               "beyond --max-lag-bytes/--max-lag-seconds.")] = False,
           since: Annotated[str | None, typer.Option("--since", help="Only gaps since then (ISO-8601 or "
                                                     "relative: 15m, 2h, 3d).")] = None,
           max_lag_bytes: Annotated[int | None, typer.Option("--max-lag-bytes", min=0)] = None,
           max_lag_seconds: Annotated[float | None, typer.Option("--max-lag-seconds", min=0)] = None,
           as_json: Json = False) -> None:
    """What is tracked, what is not, how much is journaled, the stream's slot and lag, and every
    capture gap (writes that went around the triggers, slot resets)."""
    s = journal.status(dsn, slot=check_slot_name(slot) if slot else None, gaps_since=_time(since))
    if slot and s.slot is None:  # a named slot that is not there: a typo must not pass --check
        raise BadInput(f"no replication slot {slot} in this database")
    output.emit_json(s.as_json()) if as_json else output.status(s)
    if check:
        failures = capture_check(s.gaps, s.slot, max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds)
        if failures:
            raise journal.Refused("check failed: " + "; ".join(failures))


@app.command()
def adopt(gap: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, help="Gap id from `rewind status`.")], dsn: Dsn,
          as_json: Json = False) -> None:
    """Journal a complete bypass gap's rows as an action (actor rewind:bypass), so that
    `rewind preview/undo --action` can undo the writes that went around the triggers."""
    result = journal.adopt_gap(dsn, gap)
    if as_json:
        output.emit_json(result.as_json())
    else:
        output.out.print(f"gap {result.gap}: {result.changes} change(s) journaled as action {result.action}; "
                         f"preview the undo with: rewind preview --action {result.action}")


@app.command()
def actions(dsn: OptionalDsn = None, actor: Actors = None, role: Roles = None, run: Runs = None,
            action: ActionIds = None, since: Since = None, until: Until = None, table: Tables = None,
            limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 1000,
            journal_url: JournalUrl = None, as_json: Json = False) -> None:
    """One row per transaction: actor, role, run, time, tables and counts."""
    sel = _selection(dsn, actor, role, run, action, since, until, table, journal_url)
    items = (mirror.list_actions(journal_url, sel, limit=limit) if journal_url is not None
             else journal.list_actions(_need(dsn), sel, limit=limit))
    output.emit_json([a.as_json() for a in items]) if as_json else output.actions(items)
    gaps = (mirror.list_gaps(journal_url, sel.since, sel.until) if journal_url is not None
            else journal.gaps_between(_need(dsn), sel.since, sel.until))
    output.gap_warning(gaps)


@app.command()
def show(action_id: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, help="Action id from `rewind actions`.")],
         dsn: OptionalDsn = None, journal_url: JournalUrl = None, as_json: Json = False) -> None:
    """Every change an action made, with before/after diffs."""
    action, changes = (mirror.show_action(journal_url, action_id) if journal_url is not None
                       else journal.show_action(_need(dsn), action_id))
    if as_json:
        output.emit_json({"action": action.as_json(), "changes": [c.as_json() for c in changes]})
    else:
        output.action_header(action)
        output.changes(changes, title=f"changes of action {action_id}")


@app.command()
def history(table: Annotated[str, typer.Argument(help="schema.table")],
            pk: Annotated[str, typer.Option("--pk", help="Key value, or a JSON object for composite keys.")],
            dsn: OptionalDsn = None, journal_url: JournalUrl = None, as_json: Json = False) -> None:
    """One row's life: who changed what, when."""
    changes = (mirror.row_history(journal_url, table, pk) if journal_url is not None
               else journal.row_history(_need(dsn), table, pk))
    if as_json:
        output.emit_json([c.as_json() for c in changes])
    else:
        output.changes(changes, title=f"history of {table} {pk}")


@app.command()
def preview(dsn: Dsn, actor: Actors = None, role: Roles = None, run: Runs = None, action: ActionIds = None,
            since: Since = None, until: Until = None, table: Tables = None,
            on_conflict: OnConflict = restore.Policy.ABORT,
            show_sql: Annotated[bool, typer.Option("--sql", help="Print the exact SQL instead.")] = False,
            as_json: Json = False) -> None:
    """Show what an undo of the selection would do, and its fingerprint. Changes nothing."""
    sel = _selection(dsn, actor, role, run, action, since, until, table)
    plan = restore.preview(dsn, sel, policy=on_conflict, with_sql=show_sql)
    _print_plan(plan, show_sql, as_json)


def _print_plan(plan: restore.Plan, show_sql: bool, as_json: bool) -> None:
    if as_json:
        output.emit_json({**plan.as_json(), **({"sql": plan.sql_script} if show_sql else {})})
    elif show_sql:
        sys.stdout.write("\n".join(plan.sql_script) + "\n")
    else:
        output.plan(plan)


def _confirm(yes: bool, plan_fp: str | None, preview_fn: Callable[[], restore.Plan], *,
             as_json: bool) -> str | None:
    """A person presses the final button: on a terminal, show the plan and ask; elsewhere --yes.
    With --json the plan and the question go to stderr: stdout holds the JSON result only."""
    if yes:
        return plan_fp
    if not sys.stdin.isatty():
        raise BadInput("refusing to apply without confirmation: pass --yes (stdin is not a terminal)")
    plan = preview_fn()
    output.plan(plan, console="err" if as_json else "out")
    if plan_fp is not None and plan_fp != plan.fingerprint:
        raise journal.Refused(f"the database moved since the preview: plan {plan_fp} is now {plan.fingerprint}")
    if not typer.confirm("Apply this undo?", default=False, err=as_json):
        output.err.print("rewind: not confirmed: nothing applied", markup=False, highlight=False)
        raise typer.Exit(1)
    return plan.fingerprint


@app.command()
def undo(dsn: Dsn, actor: Actors = None, role: Roles = None, run: Runs = None, action: ActionIds = None,
         since: Since = None, until: Until = None, table: Tables = None,
         on_conflict: OnConflict = restore.Policy.ABORT,
         plan: PlanFingerprint = None,
         max_rows: MaxRows = restore.DEFAULT_MAX_ROWS,
         fire_triggers: Annotated[bool, typer.Option("--fire-triggers", help="Let the tables' own "
                                                     "triggers run during the undo.")] = False,
         yes: Annotated[bool, typer.Option("--yes", help="Apply without asking.")] = False,
         as_json: Json = False) -> None:
    """Apply the undo in one transaction; journaled as actor rewind:undo."""
    sel = _selection(dsn, actor, role, run, action, since, until, table)
    sel.require_narrow()
    plan = _confirm(yes, plan, lambda: restore.preview(dsn, sel, policy=on_conflict), as_json=as_json)
    result = restore.undo(dsn, sel, policy=on_conflict, plan=plan, max_rows=max_rows,
                          fire_triggers=fire_triggers)
    output.emit_json(result.as_json()) if as_json else output.undo_result(result)


@app.command(name="restore")
def restore_cmd(dsn: Dsn, to: Annotated[str, typer.Option("--to", help="ISO-8601 or relative (15m, 2h).")],
                table: Tables = None, on_conflict: OnConflict = restore.Policy.ABORT,
                plan: PlanFingerprint = None,
                max_rows: MaxRows = restore.DEFAULT_MAX_ROWS,
                fire_triggers: Annotated[bool, typer.Option("--fire-triggers")] = False,
                dry_run: Annotated[bool, typer.Option("--preview", help="Only show the plan.")] = False,
                show_sql: Annotated[bool, typer.Option("--sql")] = False,
                yes: Annotated[bool, typer.Option("--yes")] = False, as_json: Json = False) -> None:
    """Undo everyone's changes after a time, on some tables or on every tracked one."""
    when = parse_time(to)
    tables = _selection(dsn, None, None, None, None, None, None, table).tables
    if dry_run or show_sql:
        p = restore.restore_to(dsn, when, tables=tables, policy=on_conflict, preview_only=True, with_sql=show_sql)
        assert isinstance(p, restore.Plan)
        _print_plan(p, show_sql, as_json)
        return
    def preview_restore() -> restore.Plan:
        p = restore.restore_to(dsn, when, tables=tables, policy=on_conflict, preview_only=True)
        assert isinstance(p, restore.Plan)
        return p

    fp = _confirm(yes, plan, preview_restore, as_json=as_json)
    result = restore.restore_to(dsn, when, tables=tables, policy=on_conflict, plan=fp, max_rows=max_rows,
                                fire_triggers=fire_triggers)
    assert isinstance(result, restore.UndoResult)
    output.emit_json(result.as_json()) if as_json else output.undo_result(result)


@app.command()
def stream(dsn: Dsn, journal_url: Annotated[str | None, typer.Option(
               "--journal", help="Where to mirror the journal: an SQLAlchemy URL (default: an SQLite file "
               "rewind-journal-<database>.sqlite in the current directory).")] = None,
           slot: Annotated[str | None, typer.Option("--slot", help="Replication slot (default "
                                                    "rewind_<database>); created on first start.")] = None,
           max_lag_bytes: Annotated[int | None, typer.Option(
               "--max-lag-bytes", min=1, help="Past this much WAL behind, recreate the slot and record a gap "
               "instead of letting WAL fill the disk.")] = None,
           heartbeat_seconds: Annotated[float, typer.Option(
               "--heartbeat-seconds", min=0.01, help="How often to measure lag and, when idle, let the slot release "
               "WAL.")] = 10.0,
           detect_bypass: Annotated[bool, typer.Option(
               "--bypass-detection/--no-bypass-detection", help="Also read the tracked tables' own changes "
               "and record writes that went around the triggers as gaps (about twice the decoded volume).")] = True,
           nice: Annotated[int, typer.Option("--nice", min=0, max=19, help="How far below normal CPU priority "
                                             "to run (0-19).")] = config.DEFAULT_NICE,
           ) -> None:
    """Mirror the journal off the database through logical decoding until SIGTERM or Ctrl-C
    (`rewind serve` does the same, with the HTTP API and the backup schedules)."""
    url = journal_url or mirror.default_journal_url(dsn)
    streamer = journal.Streamer(dsn, url, slot=slot, max_lag_bytes=max_lag_bytes,
                                heartbeat_seconds=heartbeat_seconds, detect_bypass=detect_bypass)
    streamer.prepare()
    from rewind import priority, service  # uvicorn and FastAPI: only the long-running commands need them

    logs.configure("text", secrets=[dsn, url])
    output.err.print(f"rewind: streaming {journal.mask_dsn(dsn)} (slot {streamer.slot}) into "
                     f"{journal.mask_dsn(url)}", markup=False, highlight=False)
    with service.stop_on_signals(threading.Event()) as stop:
        priority.lower_session(nice)
        priority.lower_thread(nice)
        streamer.run(stop)
    s = streamer.stats
    output.err.print(f"rewind: stopped after {s.changes_total} change(s) in {s.transactions_total} "
                     f"transaction(s)", markup=False, highlight=False)


@app.command()
def serve(
    dsn: Annotated[str | None, typer.Option("--dsn", help="Database to stream (REWIND_DSN, \\[serve] dsn). "
                                            "Shown masked.")] = None,
    journal_url: Annotated[str | None, typer.Option("--journal", help="Mirror's SQLAlchemy URL (REWIND_JOURNAL; "
                                                    "default an SQLite file rewind-journal-<database>.sqlite "
                                                    "in the current directory).")] = None,
    http: Annotated[str | None, typer.Option("--http", metavar="HOST:PORT", help="Where the HTTP API listens "
                                             f"(REWIND_HTTP; default {config.DEFAULT_HOST}:"
                                             f"{config.DEFAULT_PORT}).")] = None,
    config_path: Annotated[Path | None, typer.Option("--config", help="rewind.toml: \\[serve] settings and "
                                                     "\\[backup] schedules (REWIND_CONFIG; default ./rewind.toml "
                                                     "if present).")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text or json: one JSON object per "
                                                   "line on stderr (REWIND_LOG_FORMAT).")] = None,
    slot: Annotated[str | None, typer.Option("--slot", help="Replication slot (REWIND_SLOT; default "
                                             "rewind_<database>); created on first start.")] = None,
    max_lag: Annotated[int | None, typer.Option("--max-lag", metavar="BYTES", help="Past this much WAL behind, "
                                                "recreate the slot and record a gap (REWIND_MAX_LAG).")] = None,
    heartbeat_seconds: Annotated[float | None, typer.Option("--heartbeat-seconds", help="How often lag is "
                                                            "measured and an idle slot advanced "
                                                            "(REWIND_HEARTBEAT_SECONDS; default 10).")] = None,
    nice: Annotated[int | None, typer.Option("--nice", help="How far below normal CPU priority the stream runs, "
                                             f"0-19 (REWIND_NICE; default {config.DEFAULT_NICE}).")] = None,
) -> None:
    """The sidecar: the decoding stream, the backup schedules of rewind.toml and an HTTP API
    (/healthz, /readyz, /metrics) in one process, until SIGTERM or Ctrl-C."""
    settings = config.load_settings({"dsn": dsn, "journal": journal_url, "http": http, "log_format": log_format,
                                     "slot": slot, "max_lag": max_lag, "heartbeat_seconds": heartbeat_seconds,
                                     "nice": nice},
                                    config=config_path)
    from rewind import service

    code = service.serve(settings)
    if code:
        raise typer.Exit(code)


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 done, 1 refused, 2 bad input."""
    return runner.run(app, args)


def main() -> Any:
    runner.exit_with(run())
