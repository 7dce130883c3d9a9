"""Fixtures for the artifact store: a real S3-compatible server and one fixture per backend.

The S3 server is moto's, started once per session as a subprocess on a free loopback port. Every
test gets its own key prefix in one bucket, so tests never see each other's blobs.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelloop.artifacts import ArtifactStore

BUCKET = "modelloop-test"
# Small parts, so that the 20 MB tests go through a real multipart upload.
S3_BLOCK_SIZE = 5 * 2**20
_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,  # never read a developer's real profile
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1",
}


@dataclass
class S3Server:
    """A running moto server and the options that reach it."""

    endpoint_url: str

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for an ArtifactStore on this server."""
        return {
            "key": "testing",
            "secret": "testing",
            "default_block_size": S3_BLOCK_SIZE,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        }

    def client(self) -> Any:
        """A boto3 client on the server, independent of the store's s3fs instance."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with one bucket, and dummy AWS credentials in the env."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _DUMMY_AWS_ENV.items():
            mp.setenv(name, value)
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = S3Server(f"http://127.0.0.1:{port}")
        try:
            _wait_until_up(server.endpoint_url, proc)
            server.client().create_bucket(Bucket=BUCKET)
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("moto server did not start within 30 s")
            time.sleep(0.1)


@dataclass
class Backend:
    """One artifact-store backend under test, with raw access that bypasses the store."""

    name: str
    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    s3: S3Server | None = None

    def open(self) -> ArtifactStore:
        """A new ArtifactStore on this backend's root."""
        return ArtifactStore(self.root, storage_options=self.storage_options)

    def _key(self, rel: str) -> str:
        return f"{self.root.removeprefix(f's3://{BUCKET}/')}/{rel}"

    def write_raw(self, rel: str, data: bytes) -> None:
        """Overwrite the object at ``root/rel`` directly, e.g. to corrupt a blob."""
        if self.s3 is None:
            Path(self.root, rel).write_bytes(data)
        else:
            self.s3.client().put_object(Bucket=BUCKET, Key=self._key(rel), Body=data)

    def pending_uploads(self) -> dict[str, int]:
        """S3 multipart uploads begun under the root and neither completed nor aborted: the
        number of parts each has, by key."""
        assert self.s3 is not None
        client = self.s3.client()
        listing = client.list_multipart_uploads(Bucket=BUCKET, Prefix=self._key(""))
        return {
            u["Key"]: len(
                client.list_parts(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"]).get(
                    "Parts", []
                )
            )
            for u in listing.get("Uploads", [])
        }

    def complete_blobs(self) -> dict[str, bytes]:
        """Every object under ``root/blobs/`` by its path relative to the root, asserting that
        each sits at ``blobs/<2 hex>/<sha256 of its own content>``."""
        if self.s3 is None:
            base = Path(self.root)
            found = {
                p.relative_to(base).as_posix(): p.read_bytes()
                for p in (base / "blobs").rglob("*")
                if p.is_file()
            }
        else:
            client = self.s3.client()
            listing = client.list_objects_v2(Bucket=BUCKET, Prefix=self._key("blobs/"))
            prefix = self._key("")
            found = {
                obj["Key"].removeprefix(prefix): client.get_object(Bucket=BUCKET, Key=obj["Key"])[
                    "Body"
                ].read()
                for obj in listing.get("Contents", [])
            }
        for rel, data in found.items():
            digest = hashlib.sha256(data).hexdigest()
            assert rel == f"blobs/{digest[:2]}/{digest}", f"{rel} does not hold its own content"
        return found


@pytest.fixture
def local_backend(tmp_path: Path) -> Backend:
    """A store under a fresh local directory."""
    return Backend("local", str(tmp_path / "artifacts"))


@pytest.fixture
def s3_backend(s3_server: S3Server) -> Backend:
    """A store under a fresh prefix of the moto bucket."""
    return Backend(
        "s3",
        f"s3://{BUCKET}/{uuid.uuid4().hex}",
        s3_server.storage_options(),
        s3_server,
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Parametrises a test over every artifact-store backend."""
    return request.getfixturevalue(f"{request.param}_backend")
