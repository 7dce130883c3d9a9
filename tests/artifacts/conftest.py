"""Fixtures for the artifact store: a real S3-compatible server and one fixture per backend.

The S3 server is moto's, started once per session as a subprocess on a free loopback port. Every
test gets its own key prefix in one bucket, so tests never see each other's blobs.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelloop.artifacts import ArtifactStore
from s3_support import BUCKET, S3Server


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

    def read_raw(self, rel: str) -> bytes:
        """The stored bytes at ``root/rel``, read directly."""
        if self.s3 is None:
            return Path(self.root, rel).read_bytes()
        body = self.s3.client().get_object(Bucket=BUCKET, Key=self._key(rel))["Body"]
        return bytes(body.read())

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
