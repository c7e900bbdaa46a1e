"""Preview and apply an undo, and point-in-time restore of tables (the same machinery)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from journal.connection import connect
from journal.errors import Refused
from journal.schema import require_installed
from journal.selection import Selection
from restore.planner import UNDO_ACTOR, Conflict, Plan, Planner, Policy

DEFAULT_MAX_ROWS = 10_000


@dataclass
class UndoResult:
    applied: bool
    plan: str
    rows: int
    skipped: int
    conflicts: list[Conflict] = field(default_factory=list)
    action: int | None = None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "plan": self.plan, "rows": self.rows, "skipped": self.skipped,
                "conflicts": [c.as_json() for c in self.conflicts], "action": self.action,
                "tables": self.tables}


def preview(dsn: str, selection: Selection, *, policy: Policy = Policy.ABORT, with_sql: bool = False) -> Plan:
    """The plan an undo of this selection would apply now; changes nothing."""
    selection.require_narrow()
    with connect(dsn, autocommit=False) as conn:
        require_installed(conn)
        with conn.transaction(force_rollback=True):
            planner = Planner(conn, selection, policy)
            planner.select()
            planner.build()
            return planner.summary(with_sql=with_sql)
    raise AssertionError("unreachable")


def undo(dsn: str, selection: Selection, *, policy: Policy = Policy.ABORT, plan: str | None = None,
         max_rows: int | None = DEFAULT_MAX_ROWS, fire_triggers: bool = False) -> UndoResult:
    """Apply the compensating operations in one transaction, or refuse and change nothing."""
    selection.require_narrow()
    with connect(dsn, autocommit=False) as conn:
        require_installed(conn)
        with conn.transaction():
            return _undo_in(conn, selection, policy, plan, max_rows, fire_triggers)
    raise AssertionError("unreachable")


def _undo_in(conn: psycopg.Connection, selection: Selection, policy: Policy, expected_plan: str | None,
             max_rows: int | None, fire_triggers: bool) -> UndoResult:
    planner = Planner(conn, selection, policy)
    planner.select()
    planner.lock()
    planner.build()
    summary = planner.summary()
    if expected_plan is not None and expected_plan != summary.fingerprint:
        raise Refused(f"the database moved since the preview: plan {expected_plan} is now {summary.fingerprint}; "
                      "preview again", payload={"applied": False, **summary.as_json()})
    if policy is Policy.ABORT and summary.conflict_count:
        raise Refused(f"{summary.conflict_count} conflict(s): nothing applied (see `rewind preview`, "
                      "or choose --on-conflict skip|merge)", payload={"applied": False, **summary.as_json()})
    if max_rows is not None and summary.rows > max_rows:
        raise Refused(f"the undo would touch {summary.rows} rows, over --max-rows {max_rows}",
                      payload={"applied": False, **summary.as_json()})
    skipped = sum(1 for c in summary.conflicts if c.resolution == "skipped")
    if policy is not Policy.ABORT:
        skipped = conn.execute("SELECT count(*) FROM rw_plan WHERE conflict IS NOT NULL AND NOT apply").fetchone()[0]  # type: ignore[index]
    result = UndoResult(applied=False, plan=summary.fingerprint, rows=summary.rows, skipped=skipped,
                        conflicts=summary.conflicts, tables=summary.tables)
    if summary.rows == 0:
        return result
    conn.execute("SELECT set_config('rewind.actor', %s, true), set_config('rewind.run', %s, true)",
                 (UNDO_ACTOR, "undo:" + summary.fingerprint))
    try:
        undo_tx = planner.apply(fire_triggers=fire_triggers)
    except psycopg.errors.IntegrityError as exc:
        raise Refused(f"the undo broke a constraint and was rolled back: {' '.join(str(exc).split())}") from None
    result.applied = True
    result.action = undo_tx
    return result


def restore_to(dsn: str, when: datetime, *, tables: list[int] | None = None, policy: Policy = Policy.ABORT,
               plan: str | None = None, max_rows: int | None = DEFAULT_MAX_ROWS, fire_triggers: bool = False,
               preview_only: bool = False, with_sql: bool = False) -> Plan | UndoResult:
    """Undo everyone's changes after a time, on some tables or on all tracked ones."""
    selection = Selection(after=when, tables=list(tables or []))
    if preview_only:
        return preview(dsn, selection, policy=policy, with_sql=with_sql)
    return undo(dsn, selection, policy=policy, plan=plan, max_rows=max_rows, fire_triggers=fire_triggers)
