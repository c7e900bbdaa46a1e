"""Snapshots to a local directory or S3 that are proven restorable: create, list, verify, prune,
check-store, and the schedule that runs them."""

from backup.catalog import SnapshotInfo, list_snapshots, resolve
from backup.snapshot import Snapshot, create_snapshot
from backup.stores import DeleteRefused, Store, StoreError, StoreOptions, open_store
from backup.verify import VerifyResult, verify_snapshot

__all__ = ["DeleteRefused", "Snapshot", "SnapshotInfo", "Store", "StoreError", "StoreOptions", "VerifyResult",
           "create_snapshot", "list_snapshots", "open_store", "resolve", "verify_snapshot"]
