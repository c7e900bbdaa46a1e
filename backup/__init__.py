"""Snapshots to a local directory or S3 that are proven restorable: create, list, verify, prune,
check-store, and the schedule that runs them.

Names load on first use (PEP 562): `rewind backup create` needs only the snapshot and store
modules, and every module less is start-up time the command does not pay.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Small, and needed by every command. check_store is bound now because it is also the name of its
# module: imported lazily, whoever imported the module first would leave the module in its place.
from backup.check_store import check_store
from backup.stores import DeleteRefused, Store, StoreError, StoreOptions, open_store

if TYPE_CHECKING:
    from backup.catalog import SnapshotInfo, list_snapshots, resolve
    from backup.retention import PruneResult, Retention, prune
    from backup.snapshot import Snapshot, create_snapshot
    from backup.verify import VerifyResult, verify_snapshot

_WHERE = {
    "SnapshotInfo": "catalog", "list_snapshots": "catalog", "resolve": "catalog",
    "PruneResult": "retention", "Retention": "retention", "prune": "retention",
    "Snapshot": "snapshot", "create_snapshot": "snapshot",
    "VerifyResult": "verify", "verify_snapshot": "verify",
}

__all__ = ["DeleteRefused", "PruneResult", "Retention", "Snapshot", "SnapshotInfo", "Store", "StoreError",
           "StoreOptions", "VerifyResult", "check_store", "create_snapshot", "list_snapshots", "open_store",
           "prune", "resolve", "verify_snapshot"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'backup' has no attribute {name!r}")
    value = getattr(import_module(f"backup.{module}"), name)
    globals()[name] = value
    return value
