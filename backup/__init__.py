"""Snapshots to a local directory or S3 that are proven restorable: create, list, verify, prune,
check-store, and the schedule that runs them."""

from backup.catalog import SnapshotInfo, list_snapshots, resolve
from backup.check_store import check_store
from backup.retention import PruneResult, Retention, prune
from backup.snapshot import Snapshot, create_snapshot
from backup.stores import DeleteRefused, Store, StoreError, StoreOptions, open_store
from backup.verify import VerifyResult, verify_snapshot

__all__ = ["DeleteRefused", "PruneResult", "Retention", "Snapshot", "SnapshotInfo", "Store", "StoreError",
           "StoreOptions", "VerifyResult", "check_store", "create_snapshot", "list_snapshots", "open_store",
           "prune", "resolve", "verify_snapshot"]
