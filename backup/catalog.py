"""What is in a store: snapshots are the ids that have a manifest; newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup import manifest as mf
from backup.stores import Store, StoredObject
from journal.errors import BadInput


@dataclass
class SnapshotInfo:
    id: str
    created_at: datetime
    bytes: int
    tables: int | None
    verified: bool | None
    objects: list[StoredObject]
    verifications: list[str]  # keys, oldest first
    manifest: dict[str, Any] | None
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "created_at": self.created_at.isoformat(), "bytes": self.bytes,
                               "tables": self.tables, "verified": self.verified}
        if self.problem:
            out["problem"] = self.problem
        return out


def _id_time(snap_id: str) -> datetime:
    return datetime.strptime(snap_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def interrupted(store: Store, before: datetime) -> dict[str, list[StoredObject]]:
    """The objects of snapshots begun before `before` that never got their manifest: a create
    killed half-way. They do not exist for list, verify or restore; only prune removes them."""
    groups: dict[str, list[StoredObject]] = {}
    for obj in store.list():
        snap_id, _, name = obj.key.partition("/")
        if name and not snap_id.startswith("."):
            groups.setdefault(snap_id, []).append(obj)
    out = {}
    for snap_id, objects in groups.items():
        if any(o.key.partition("/")[2] == mf.MANIFEST for o in objects):
            continue
        try:
            begun = _id_time(snap_id)
        except ValueError:
            continue  # not a snapshot's key: not ours to delete
        if begun < before:
            out[snap_id] = objects
    return out


def list_snapshots(store: Store, *, with_verified: bool = True) -> list[SnapshotInfo]:
    groups: dict[str, list[StoredObject]] = {}
    for obj in store.list():
        snap_id, _, name = obj.key.partition("/")
        if name and not snap_id.startswith("."):
            groups.setdefault(snap_id, []).append(obj)
    found = []
    for snap_id, objects in groups.items():
        names = {o.key.partition("/")[2] for o in objects}
        if mf.MANIFEST not in names:
            continue  # an interrupted snapshot: it does not exist
        verifications = sorted(o.key for o in objects if o.key.partition("/")[2].startswith(mf.VERIFY_PREFIX))
        info = SnapshotInfo(snap_id, _id_time(snap_id), sum(o.size for o in objects), None, None, objects,
                            verifications, None)
        try:
            doc = mf.unseal(store.get_bytes(mf.key(snap_id, mf.MANIFEST)), mf.key(snap_id, mf.MANIFEST))
            info.manifest = doc
            info.created_at = datetime.fromisoformat(doc["created_at"])
            info.tables = len(doc["tables"])
            info.bytes = sum(o["bytes"] for o in doc["objects"].values())
        except mf.CorruptObject as exc:
            info.problem = str(exc)
            info.verified = False
        if with_verified and verifications and info.problem is None:
            try:
                info.verified = bool(mf.unseal(store.get_bytes(verifications[-1]), verifications[-1])["ok"])
            except mf.CorruptObject:
                info.verified = False
        found.append(info)
    return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)


def resolve(store: Store, which: str) -> SnapshotInfo:
    snaps = list_snapshots(store)
    if not snaps:
        raise BadInput(f"no snapshots in {store.url}")
    if which == "latest":
        return snaps[0]
    for s in snaps:
        if s.id == which:
            return s
    raise BadInput(f"no snapshot {which!r} in {store.url}")
