"""The manifest and verification records: JSON documents that carry their own SHA-256.

A snapshot is `<id>/dump.pgc` plus `<id>/manifest.json`; the manifest is written last, so a
snapshot without one does not exist. Each document's ``sha256`` field is the SHA-256 of its
canonical form without that field, so a flipped byte anywhere in it is detected.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
DUMP = "dump.pgc"
VERIFY_PREFIX = "verify-"


class CorruptObject(Exception):
    """A stored document that does not parse or does not match its own checksum."""


def new_id(now: datetime | None = None) -> str:
    """Sorts by time: 20250102T030405Z-1a2b3c."""
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def key(snapshot_id: str, name: str) -> str:
    return f"{snapshot_id}/{name}"


def verify_key(snapshot_id: str, now: datetime | None = None) -> str:
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return key(snapshot_id, f"{VERIFY_PREFIX}{t.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(2)}.json")


def _canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def seal(doc: dict[str, Any]) -> bytes:
    sealed = {**doc, "sha256": hashlib.sha256(_canonical(doc)).hexdigest()}
    return (json.dumps(sealed, sort_keys=True, indent=2, ensure_ascii=True, default=str) + "\n").encode()


def unseal(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptObject(f"object {what} is corrupt: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("sha256") != hashlib.sha256(_canonical(doc)).hexdigest():
        raise CorruptObject(f"object {what} is corrupt: its SHA-256 does not match its content")
    return doc


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()
