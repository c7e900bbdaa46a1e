"""A local directory: the embedded default. Writes go to a temporary name and are linked into
place, so a key appears complete or not at all and an existing key is never replaced. A file
staged inside the store (same filesystem) is made durable and linked in rather than copied, and
readers can use an object's file in place: a dump is written once and never copied."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from backup.stores import DeleteRefused, NotFound, ObjectExists, Progress, Store, StoredObject
from journal.errors import BadInput

_CHUNK = 1024 * 1024
_TMP = ".tmp-"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            self._link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def _link(self, src: Path, final: Path) -> None:
        try:
            os.link(src, final)  # fails if final exists: write once
        except FileExistsError:
            raise ObjectExists(f"object {final.relative_to(self.root)} already exists; keys are written once") from None
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

    @contextmanager
    def staging(self) -> Iterator[Path]:
        self.preflight()
        tmp = Path(tempfile.mkdtemp(prefix=_TMP, dir=self.root))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove_stale_staging(self, before: float) -> tuple[str, ...]:
        removed = []
        for path in self.root.rglob(f"{_TMP}*") if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                if path.lstat().st_mtime < before:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                    removed.append(path.relative_to(self.root).as_posix())
        return tuple(sorted(removed))

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"object {key} not found in {self.url}")
        return path

    def _staged(self, path: Path) -> bool:
        """Only files in this store's own staging areas are taken by link: linking anyone else's
        file would let a later write to it change the stored object."""
        parent = path.absolute().parent
        return parent.parent == self.root.absolute() and parent.name.startswith(_TMP) and path.is_file()

    def sync_staged(self, path: Path) -> None:
        if self._staged(path):
            with contextlib.suppress(OSError):  # put_file's own fsync reports it
                _fsync(path)

    def put_file(self, key: str, path: Path, *, sha256: str, progress: Progress | None = None) -> None:
        if self._staged(path):
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync(path)  # durable before it becomes visible under its key (cheap after sync_staged)
            self._link(path, final)
            if progress:
                progress(path.stat().st_size)
            return

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

    def get_file(self, key: str, dest: Path) -> str:
        h = hashlib.sha256()
        try:
            with open(self._path(key), "rb") as src, open(dest, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
        except FileNotFoundError:
            raise NotFound(f"object {key} not found in {self.url}") from None
        return h.hexdigest()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"object {key} not found in {self.url}") from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.is_dir():
            return []
        found = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(_TMP)]  # staging areas
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
