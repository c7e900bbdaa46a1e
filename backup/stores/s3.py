"""S3 and look-alikes (MinIO, Ceph, R2) through boto3.

Endpoint, region and credentials come from the usual AWS chain (AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL, AWS_REGION, profiles...) unless StoreOptions overrides them. Every upload sends
a SHA-256 checksum, can ask for SSE-S3/SSE-KMS, and can carry an Object Lock retention; keys are
written once. Transient failures are retried by botocore's standard mode (exponential backoff
with jitter); what still fails is reported in one line.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from backup.stores import DeleteRefused, NotFound, ObjectExists, Progress, Store, StoredObject, StoreError, StoreOptions
from journal.connection import mask_dsn
from journal.errors import BadInput

_CHUNK = 1024 * 1024


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: Exception) -> str:
    """One line; botocore's messages quote the endpoint URL, credentials and all: masked."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return mask_dsn(" ".join(str(exc).split()))


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, options: StoreOptions) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        retries: dict[str, Any] = {"mode": "standard"}
        if "AWS_MAX_ATTEMPTS" not in os.environ:
            retries["max_attempts"] = options.max_attempts
        config = Config(s3={"addressing_style": "path" if options.path_style else "auto"}, retries=retries,
                        connect_timeout=10, read_timeout=120)
        try:
            self.client = boto3.session.Session().client("s3", endpoint_url=options.endpoint_url,
                                                         region_name=options.region, config=config)
        except ValueError as exc:  # botocore's check of the endpoint URL
            raise BadInput(f"store {self.url}: bad endpoint URL {mask_dsn(options.endpoint_url or '')!r}: "
                           f"{exc}") from None
        self.endpoint = mask_dsn(str(self.client.meta.endpoint_url))  # credentials in the URL are not shown

    # ------------------------------------------------------------------ helpers

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except NoCredentialsError:
            raise StoreError(f"{what} on {self.url}: no AWS credentials found (AWS_ACCESS_KEY_ID, profile, "
                             "or instance role)") from None
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"{what} on {self.url} ({self.endpoint}) failed: {_reason(exc)}") from None

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _refuse_existing(self, key: str) -> None:
        with self._errors(f"checking {key}"):
            if self._exists(key):
                raise ObjectExists(f"object {key} already exists in {self.url}; keys are written once")

    def _write_args(self) -> dict[str, Any]:
        o = self.options
        args: dict[str, Any] = {}
        if o.sse:
            args["ServerSideEncryption"] = o.sse
            if o.kms_key_id:
                args["SSEKMSKeyId"] = o.kms_key_id
        if o.lock_mode:
            args["ObjectLockMode"] = o.lock_mode.upper()
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=o.lock_days or 1)
        return args

    # ------------------------------------------------------------------ interface

    def preflight(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise BadInput(f"store {self.url}: no AWS credentials found (AWS_ACCESS_KEY_ID, profile, "
                           "or instance role)") from None
        except ClientError as exc:
            code = _code(exc)
            why = {"404": "bucket does not exist", "403": "access denied (check the credentials)"}.get(code)
            raise BadInput(f"store {self.url} at {self.endpoint}: {why or _reason(exc)}") from None
        except BotoCoreError as exc:
            raise BadInput(f"store {self.url}: cannot reach {self.endpoint}: {_reason(exc)}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._refuse_existing(key)
        sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
        with self._errors(f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data,
                                   ChecksumAlgorithm="SHA256", ChecksumSHA256=sha, **self._write_args())

    def put_file(self, key: str, path: Path, *, sha256: str, progress: Progress | None = None) -> None:
        self._refuse_existing(key)
        size = path.stat().st_size
        with self._errors(f"uploading {key}"):
            if size < self.options.multipart_threshold:
                sha = base64.b64encode(bytes.fromhex(sha256)).decode()
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=body,
                                           ChecksumAlgorithm="SHA256", ChecksumSHA256=sha, **self._write_args())
                if progress:
                    progress(size)
                return
            # Multipart: every part carries its own SHA-256 which the server checks; the whole
            # file's SHA-256 is in the manifest and checked on every download.
            transfer = TransferConfig(multipart_threshold=self.options.multipart_threshold,
                                      multipart_chunksize=self.options.part_size, max_concurrency=4)
            extra = {"ChecksumAlgorithm": "SHA256", **self._write_args()}
            self.client.upload_file(str(path), self.bucket, self._full(key), ExtraArgs=extra, Config=transfer,
                                    Callback=progress)

    def _get(self, key: str, write: Callable[[bytes], Any]) -> None:
        with self._errors(f"reading {key}"):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED")
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey"):
                    raise NotFound(f"object {key} not found in {self.url}") from None
                raise
            body = resp["Body"]
            while chunk := body.read(_CHUNK):
                write(chunk)

    def get_file(self, key: str, dest: Path) -> str:
        h = hashlib.sha256()
        with open(dest, "wb") as f:
            def write(chunk: bytes) -> None:
                h.update(chunk)
                f.write(chunk)

            self._get(key, write)
        return h.hexdigest()

    def get_bytes(self, key: str) -> bytes:
        parts: list[bytes] = []
        self._get(key, parts.append)
        return b"".join(parts)

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = f"{self.prefix}/" if self.prefix else ""
        found = []
        with self._errors("listing"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=base + prefix):
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"][len(base):], int(item["Size"])))
        return sorted(found, key=lambda o: o.key)

    def _versions(self, full: str) -> builtins.list[str]:
        versions = []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item["Key"] == full:
                    versions.append(str(item["VersionId"]))
        return versions

    def delete(self, key: str) -> None:
        """Delete every version: a plain DELETE on a versioned bucket only adds a delete marker,
        which would hide a snapshot without freeing it (and without Object Lock noticing)."""
        full = self._full(key)
        with self._errors(f"deleting {key}"):
            targets: builtins.list[str | None] = [*self._versions(full)] or [None]
            for vid in targets:
                try:
                    if vid is None:
                        self.client.delete_object(Bucket=self.bucket, Key=full)
                    else:
                        self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=vid)
                except ClientError as exc:
                    if _code(exc) in ("AccessDenied", "InvalidRequest", "ObjectLocked"):
                        raise DeleteRefused(f"{key}: {_reason(exc)}") from None
                    raise

    def check_immutability(self) -> dict[str, Any]:
        report: dict[str, Any] = {"store": self.url, "endpoint": self.endpoint}
        with self._errors("reading the bucket configuration"):
            try:
                cfg = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
                report["object_lock"] = cfg.get("ObjectLockEnabled") == "Enabled"
                report["default_retention"] = cfg.get("Rule", {}).get("DefaultRetention")
            except ClientError as exc:
                report["object_lock"] = False
                report["object_lock_detail"] = _reason(exc)
            report["versioning"] = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status", "Off")
        key = f".rewind-check-store/{uuid.uuid4().hex}"
        mode = (self.options.lock_mode or "GOVERNANCE").upper()
        full = self._full(key)
        with self._errors("writing the probe object"):
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=b"rewind check-store probe\n",
                                       ChecksumAlgorithm="SHA256", ObjectLockMode=mode,
                                       ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1))
            except ClientError as exc:
                report.update(enforced=False, probe=key,
                              detail=f"the store refused a locked write ({_reason(exc)}): no Object Lock")
                return report
        report["probe"] = key
        report["probe_mode"] = mode
        try:
            self.delete(key)
        except DeleteRefused as exc:
            report.update(enforced=True, detail=f"deleting the locked probe's version was refused ({exc})")
            return report
        report.update(enforced=False, detail="the store accepted the lock settings and then deleted the locked "
                                             "version: it does not enforce immutability")
        return report
