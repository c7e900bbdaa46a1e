"""A store that fails exactly when the manifest would be written: the moment that decides whether
an interrupted snapshot is listed. Shared by the local and the S3 suites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backup.stores import Store


class DiesBeforeManifest(Store):
    """Delegates to a real store, but raises `error` on put_bytes (how the manifest is written)."""

    def __init__(self, inner: Store, error: BaseException) -> None:
        self.inner, self.url, self.error = inner, inner.url, error

    def put_file(self, key: str, path: Path, *, sha256: str, progress: Any = None) -> None:
        self.inner.put_file(key, path, sha256=sha256, progress=progress)

    def put_bytes(self, key: str, data: bytes) -> None:
        raise self.error

    def get_file(self, key: str, dest: Path) -> str:
        return self.inner.get_file(key, dest)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def list(self, prefix: str = "") -> list[Any]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check_immutability(self) -> dict[str, Any]:
        return self.inner.check_immutability()
