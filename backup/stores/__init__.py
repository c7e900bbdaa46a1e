"""One small interface every store implements, and `open_store` to pick one from a URL.

Keys are relative paths (``<snapshot id>/dump.pgc``). Every key is written once and never
overwritten, so a WORM bucket (S3 Object Lock) works: a second write of a key is refused.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from journal.errors import BadInput, Refused

Progress = Callable[[int], None]


class StoreError(Refused):
    """The store failed during a run (after retries): exit 1 with the store's own reason."""


class ObjectExists(StoreError):
    """A key was about to be written a second time."""


class NotFound(StoreError):
    """The key does not exist."""


class DeleteRefused(Exception):
    """The store refused a delete (Object Lock retention): the object stays, which is not an error."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


@dataclass
class StoreOptions:
    """Settings only some stores use; the S3 ones mirror boto3's names."""

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    sse: str | None = None  # "AES256" (SSE-S3) or "aws:kms" (SSE-KMS)
    kms_key_id: str | None = None
    lock_mode: str | None = None  # "GOVERNANCE" or "COMPLIANCE"
    lock_days: int | None = None
    multipart_threshold: int = 64 * 1024 * 1024
    part_size: int = 16 * 1024 * 1024
    max_attempts: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


class Store(ABC):
    url: str

    @abstractmethod
    def put_file(self, key: str, path: Path, *, sha256: str, progress: Progress | None = None) -> None:
        """Upload a file whose SHA-256 (hex) the caller computed; refused if the key exists."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object; refused if the key exists."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> str:
        """Write the object to dest; return the SHA-256 (hex) of the bytes written, computed as they
        pass, so a download is read once."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[StoredObject]:
        """Every object whose key starts with prefix, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object (every version of it); DeleteRefused if the store keeps it locked."""

    @abstractmethod
    def check_immutability(self) -> dict[str, Any]:
        """Write a small locked object, try to delete it, and report what happened."""

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Fail with BadInput before any work if the store cannot be reached."""

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory for files about to be put, removed afterwards. A store that can
        take a file without copying it (same filesystem) places it where that works."""
        with tempfile.TemporaryDirectory(prefix="rewind-staging-") as tmp:
            yield Path(tmp)

    def sync_staged(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Start now what put_file will need of a staged file besides its SHA-256 (a local store
        makes it durable), so that the caller can compute the SHA-256 meanwhile. Runs in another
        thread; put_file must not rely on it having run."""

    def local_path(self, key: str) -> Path | None:
        """The object's own file when the store is a directory on this machine, so a reader can
        use it in place instead of copying it; None for remote stores."""
        return None

    def remove_stale_staging(self, before: float) -> tuple[str, ...]:
        """Remove staging leftovers of runs killed before `before` (a Unix time) that live in the
        store itself; their names. Nothing for stores that stage elsewhere."""
        return ()


def open_store(url: str, options: StoreOptions | None = None) -> Store:
    """`file:///absolute/path` or `s3://bucket/prefix`."""
    opts = options or StoreOptions()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise BadInput(f"store URL {url!r}: use file:///absolute/path")
        from backup.stores.local import LocalStore

        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BadInput(f"store URL {url!r}: use s3://bucket/prefix")
        from backup.stores.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path.strip("/"), opts)
    raise BadInput(f"unknown store URL scheme in {url!r}: use file:///absolute/path or s3://bucket/prefix")


__all__ = ["DeleteRefused", "NotFound", "ObjectExists", "Progress", "Store", "StoreError", "StoreOptions",
           "StoredObject", "open_store"]
