"""A real S3 endpoint over HTTP for the backup tests: moto's server on 127.0.0.1.

moto enforces Object Lock on single-part objects but gives multipart uploads in a lock bucket no
retention and does not validate checksums; the tests lock single-part objects and rely on
rewind's own SHA-256 check on download.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class S3:
    endpoint: str
    client: Any

    def bucket(self, *, lock: bool = False) -> str:
        name = f"rewind-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name


def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, endpoint: str, access_key: str,
                    secret_key: str) -> None:
    """Endpoint and credentials through the standard AWS environment, as a user would set them,
    and nothing from this machine's own AWS configuration."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> S3:
    aws_environment(monkeypatch, tmp_path, moto_endpoint, "rewind-test", "rewind-test-secret")
    client = boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    return S3(moto_endpoint, client)
