"""Does the store really refuse deletes? Several S3 look-alikes accept Object Lock settings and
ignore them; the only proof is to write a small locked object and try to delete its version."""

from __future__ import annotations

from typing import Any

from backup.stores import Store


def check_store(store: Store) -> dict[str, Any]:
    """A report with at least store, enforced (bool) and detail."""
    store.preflight()
    return store.check_immutability()
