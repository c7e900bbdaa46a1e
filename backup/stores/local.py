"""A local directory: the embedded default. Writes go to a temporary name and are linked into
place, so a key appears complete or not at all and an existing key is never replaced."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from backup.stores import DeleteRefused, NotFound, ObjectExists, Progress, Store, StoredObject
from journal.errors import BadInput

_CHUNK = 1024 * 1024
_TMP = ".tmp-"


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise BadInput(f"bad object key {key!r}")
        return self.root.joinpath(*parts)

    def preflight(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot use store {self.url}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BadInput(f"cannot use store {self.url}: not writable")

    def _publish(self, tmp: Path, final: Path) -> None:
        try:
            os.link(tmp, final)  # fails if final exists: write once
        except FileExistsError:
            raise ObjectExists(f"object {final.relative_to(self.root)} already exists; keys are written once") from None
        finally:
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _tmp(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise ObjectExists(f"object {final.relative_to(self.root)} already exists; keys are written once")
        return final.parent / f"{_TMP}{uuid.uuid4().hex}"

    def put_file(self, key: str, path: Path, *, sha256: str, progress: Progress | None = None) -> None:
        def copy(dst: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    if progress:
                        progress(len(chunk))

        self._write_new(key, copy)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write_new(key, lambda dst: dst.write(data))

    def _write_new(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write beside the final name, make it durable, then publish: a key appears whole or not
        at all, and an interrupted write leaves nothing behind."""
        final = self._path(key)
        tmp = self._tmp(final)
        try:
            with open(tmp, "xb") as dst:
                fill(dst)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._publish(tmp, final)

    def get_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise NotFound(f"object {key} not found in {self.url}") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"object {key} not found in {self.url}") from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(StoredObject(key, full.stat().st_size))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except PermissionError as exc:
            raise DeleteRefused(f"{key}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty

    def check_immutability(self) -> dict[str, Any]:
        key = f".rewind-check-store/{uuid.uuid4().hex}"
        self.put_bytes(key, b"rewind check-store probe\n")
        try:
            self.delete(key)
        except DeleteRefused as exc:
            return {"store": self.url, "enforced": True, "detail": f"delete refused: {exc}"}
        return {"store": self.url, "enforced": False,
                "detail": "a local directory cannot refuse deletes: use an S3 bucket with Object Lock"}
