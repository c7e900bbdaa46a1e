"""Grandfather-father-son retention. Never deletes the newest verified snapshot; a delete the
store refuses (Object Lock) leaves the snapshot kept and reported, not an error."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from backup import manifest as mf
from backup.catalog import SnapshotInfo, interrupted, list_snapshots
from backup.stores import DeleteRefused, Store
from journal.errors import BadInput

# How old the leftovers of a killed create must be before prune removes them: older than any
# create still running could be.
DEBRIS_AGE: Final = timedelta(hours=24)


@dataclass
class Retention:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def empty(self) -> bool:
        return not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly)


@dataclass
class PruneResult:
    dry_run: bool
    keep: dict[str, list[str]] = field(default_factory=dict)  # id -> reasons
    delete: list[str] = field(default_factory=list)  # planned
    deleted: list[str] = field(default_factory=list)
    locked: dict[str, str] = field(default_factory=dict)  # id -> why the store kept it
    interrupted: list[str] = field(default_factory=list)  # killed creates (no manifest), removed unless dry run
    staging: list[str] = field(default_factory=list)  # leftover staging files and directories removed

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "keep": [{"id": k, "reasons": v} for k, v in self.keep.items()],
                "delete": self.delete, "deleted": self.deleted,
                "locked": [{"id": k, "reason": v} for k, v in self.locked.items()],
                "interrupted": self.interrupted, "staging": self.staging}


def plan(snaps: list[SnapshotInfo], rule: Retention) -> dict[str, list[str]]:
    """Which snapshots to keep and why; snaps newest first."""
    keep: dict[str, list[str]] = {}
    for s in snaps[: rule.keep_last]:
        keep.setdefault(s.id, []).append("last")

    def periodic(n: int, name: str, bucket: Callable[[datetime], Hashable]) -> None:
        seen: set[Hashable] = set()
        for s in snaps:
            if len(seen) >= n:
                break
            b = bucket(s.created_at)
            if b not in seen:
                seen.add(b)
                keep.setdefault(s.id, []).append(name)

    periodic(rule.keep_daily, "daily", lambda t: t.date())
    periodic(rule.keep_weekly, "weekly", lambda t: t.isocalendar()[:2])
    periodic(rule.keep_monthly, "monthly", lambda t: (t.year, t.month))
    newest_verified = next((s for s in snaps if s.verified is True), None)
    if newest_verified is not None:
        keep.setdefault(newest_verified.id, []).append("newest verified")
    return keep


def prune(store: Store, rule: Retention, *, dry_run: bool = False) -> PruneResult:
    if rule.empty():
        raise BadInput("no retention rule: pass at least one of --keep-last/--keep-daily/--keep-weekly/"
                       "--keep-monthly (or [backup.retention] in rewind.toml)")
    if min(rule.keep_last, rule.keep_daily, rule.keep_weekly, rule.keep_monthly) < 0:
        raise BadInput("retention counts must not be negative")
    store.preflight()
    snaps = list_snapshots(store)
    keep = plan(snaps, rule)
    result = PruneResult(dry_run, keep={s.id: keep[s.id] for s in snaps if s.id in keep},
                         delete=[s.id for s in reversed(snaps) if s.id not in keep])
    cutoff = datetime.now(UTC) - DEBRIS_AGE
    debris = interrupted(store, cutoff)
    result.interrupted = sorted(debris)
    if dry_run:
        return result
    for snap_id, objects in sorted(debris.items()):
        try:
            for obj in objects:
                store.delete(obj.key)
        except DeleteRefused as exc:
            result.locked[snap_id] = f"an interrupted create's object is locked ({exc})"
    result.staging = list(store.remove_stale_staging(cutoff.timestamp()))
    by_id = {s.id: s for s in snaps}
    for snap_id in result.delete:
        # The manifest goes first: once it is gone the snapshot no longer exists, so a run that
        # stops half-way never leaves a listed snapshot with missing objects.
        names = [mf.MANIFEST, *sorted(o.key.partition("/")[2] for o in by_id[snap_id].objects
                                      if not o.key.endswith("/" + mf.MANIFEST))]
        try:
            for name in names:
                by_key = mf.key(snap_id, name)
                try:
                    store.delete(by_key)
                except DeleteRefused as exc:
                    if name == mf.MANIFEST:
                        raise
                    result.locked[snap_id] = f"object {name} is locked ({exc}); snapshot no longer listed"
        except DeleteRefused as exc:
            result.locked[snap_id] = f"the store refused the delete (Object Lock): {exc}"
            continue
        if snap_id not in result.locked:
            result.deleted.append(snap_id)
    return result
