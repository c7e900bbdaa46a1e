"""Rendering results for people (Rich) and programs (JSON on stdout, nothing else).

Rich loads on first use of `out` or `err` (PEP 562): a command that prints only JSON, such as
`rewind backup create --json`, does not pay for importing it.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from journal import Action, Change, GapRecord, Status
    from restore import Plan, UndoResult

out: Console
err: Console


def _console(name: str) -> Console:
    """`out` or `err`; both are created on first use and are ordinary module globals from then on."""
    g = globals()
    if "out" not in g:
        from rich.console import Console

        g.update(out=Console(), err=Console(stderr=True))
    console: Console = g[name]
    return console


def __getattr__(name: str) -> Any:
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(f"module 'rewind.output' has no attribute {name!r}")


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str, indent=2) + "\n")


def _counts(ops: dict[str, int]) -> str:
    return " ".join(f"{k[0].upper()}{v}" for k, v in ops.items() if v)


def actions(items: list[Action]) -> None:
    from rich.table import Table

    out = _console("out")
    if not items:
        out.print("no actions match")
        return
    table = Table(title="actions (newest first)")
    for col in ("id", "started", "actor", "role", "run", "changes", "tables"):
        table.add_column(col, overflow="fold")
    for a in items:
        tables = ", ".join(f"{t} {_counts(ops)}" for t, ops in a.tables.items())
        if a.ddl:
            tables = ", ".join(filter(None, [tables, *(f"[bold red]{d}[/]" for d in a.ddl)]))
        table.add_row(str(a.id), a.started_at.strftime("%Y-%m-%d %H:%M:%S"), a.actor, a.role, a.run or "",
                      str(a.changes), tables)
    out.print(table)


def _value(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def changes(items: list[Change], *, title: str) -> None:
    from rich.table import Table

    out = _console("out")
    table = Table(title=title)
    for col in ("change", "action", "actor", "table", "op", "key", "diff (before → after)"):
        table.add_column(col, overflow="fold")
    for c in items:
        diff = "\n".join(f"{k}: {_value(b)} → {_value(a)}" for k, (b, a) in c.diff.items())
        table.add_row(str(c.id), str(c.action), c.actor or "", c.table, c.op, _value(c.key), diff)
    out.print(table)


def action_header(a: Action) -> None:
    out = _console("out")
    out.print(f"[bold]action {a.id}[/] xid {a.xid} by [bold]{a.actor}[/] (role {a.role}, "
              f"application {a.application or '-'}, run {a.run or '-'}) at {a.started_at:%Y-%m-%d %H:%M:%S%z}")
    for d in a.ddl:
        out.print(f"  DDL: [bold red]{d}[/]")


def plan(p: Plan, *, console: str = "out") -> None:
    from rich.table import Table

    out = _console(console)
    out.print(f"[bold]undo plan {p.fingerprint}[/]  ({p.changes} journaled changes in {len(p.actions)} "
              f"action(s); on conflict: {p.policy})")
    table = Table()
    for col in ("table", "re-insert", "revert", "delete"):
        table.add_column(col, overflow="fold")
    for name, ops in sorted(p.tables.items()):
        table.add_row(name, str(ops["insert"]), str(ops["update"]), str(ops["delete"]))
    if p.tables:
        out.print(table)
    else:
        out.print("nothing to apply")
    if p.conflict_count:
        ct = Table(title=f"{p.conflict_count} conflict(s)", title_style="bold red")
        for col in ("table", "pk", "why", "changed by", "now", "resolution"):
            ct.add_column(col, overflow="fold")
        for c in p.conflicts:
            ct.add_row(c.table, _value(c.pk), c.reason, ", ".join(c.changed_by), _value(c.actual), c.resolution)
        out.print(ct)
    for s in p.samples:
        diff = ", ".join(f"{k}: {_value(b)} → {_value(a)}" for k, (b, a) in s["diff"].items())
        out.print(f"  sample {s['op']:6} {s['table']} {_value(s['pk'])}: {diff}")
    out.print(f"apply with: rewind undo ... --plan {p.fingerprint}")


def undo_result(r: UndoResult) -> None:
    out = _console("out")
    if r.applied:
        out.print(f"[bold green]undone[/]: {r.rows} row(s) restored as action {r.action} (plan {r.plan}); "
                  f"{r.skipped} conflict(s) skipped")
        out.print(f"to undo this undo: rewind undo --action {r.action}")
    else:
        out.print(f"nothing applied (plan {r.plan}): {r.skipped} conflict(s) skipped, no rows left to change")


def status(s: Status) -> None:
    from rich.panel import Panel
    from rich.table import Table

    out = _console("out")
    out.print(f"rewind schema revision {s.revision}; {s.actions} action(s), {s.changes} change(s) journaled")
    table = Table(title="tracked tables")
    for col in ("table", "key", "mode"):
        table.add_column(col, overflow="fold")
    for t in s.tables:
        table.add_row(t.table, ", ".join(t.key_columns) or "(whole row)", t.mode)
    out.print(table)
    if s.schemas:
        out.print("auto-tracking new tables in schemas: " + ", ".join(s.schemas))
    if s.untracked:
        out.print("[bold yellow]not tracked[/]: " + ", ".join(s.untracked))
    if s.slot is None:
        out.print("decoding stream: no replication slot (bypass detection and the mirror are off)")
    else:
        out.print(f"decoding stream: slot {s.slot.name} ({'active' if s.slot.active else 'inactive'}), lag "
                  f"{s.slot.lag_bytes} bytes, {s.slot.lag_seconds:.1f} s")
    if s.commit_timestamps:
        out.print("commit times: the server keeps them (track_commit_timestamp), with or without the stream")
    else:
        out.print("commit times: stamped by the decoding stream only (track_commit_timestamp is off); what it has "
                  "not stamped, restore --to cannot tell committed after the time it is given")
    if s.gaps:
        out.print(Panel("\n".join(g.describe() for g in s.gaps), style="bold red",
                        title=f"{len(s.gaps)} capture gap(s): the journal is missing writes", title_align="left"))


def gap_warning(gaps: list[GapRecord]) -> None:
    """On stderr, so that --json output stays clean: the listing above is not everything."""
    if not gaps:
        return
    bypasses = [g for g in gaps if g.kind == "bypass" and not g.misfiled]
    misfiled = [g for g in gaps if g.misfiled]
    resets = [g for g in gaps if g.kind == "slot_reset"]
    tables = sorted({g.table for g in bypasses if g.table})
    parts = [f"{sum(g.changes or 0 for g in bypasses)} write(s) to {', '.join(tables)} went around the "
             f"triggers in {len(bypasses)} transaction(s)"] if bypasses else []
    if misfiled:
        parts.append(f"{sum(g.changes or 0 for g in misfiled)} journal row(s) filed under another transaction's "
                     f"record in {len(misfiled)} transaction(s)")
    if resets:
        parts.append(f"{len(resets)} slot reset(s) lost a span of the stream")
    err = _console("err")
    err.print(f"rewind: warning: capture gaps in this window: {'; '.join(parts)} (see `rewind status`)",
              style="bold red", markup=False, highlight=False, soft_wrap=True)
