"""``ArtifactStore.blob_writer``: content pushed piece by piece (as an HTTP body arrives) is
stored under its digest only when it hashes to it, encrypted on the way when a key is set, and
leaves nothing behind otherwise — on a local root and on S3."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelloop.artifacts import ArtifactStore, EncryptionKey, Keyring
from modelloop.artifacts._crypto import MAGIC
from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    from conftest import Backend


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def leftovers(backend: Backend) -> list[Path]:
    tmp = Path(backend.root, "tmp")
    return sorted(p for p in tmp.rglob("*") if p.is_file()) if backend.s3 is None else []


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_pushed_content_is_stored_under_its_digest(backend: Backend, encrypted: bool) -> None:
    keyring = Keyring(EncryptionKey.generate()) if encrypted else Keyring()
    store = ArtifactStore(backend.root, storage_options=backend.storage_options, keyring=keyring)
    data = os.urandom(3 * (1 << 20) + 123)
    digest = hashlib.sha256(data).hexdigest()
    with store.blob_writer(digest) as writer:
        for piece in pieces(data, 65536 + 7):
            writer.write(piece)
        info = writer.commit()
    assert (info.digest, info.size) == (digest, len(data))
    assert store.read_bytes(digest) == data
    raw = backend.read_raw(f"blobs/{digest[:2]}/{digest}")
    assert raw.startswith(MAGIC) == encrypted
    assert (data[:4096] in raw) != encrypted
    assert leftovers(backend) == []


def test_content_that_does_not_match_its_digest_stores_nothing(backend: Backend) -> None:
    store = backend.open()
    data = b"what was sent"
    named = hashlib.sha256(b"what was announced").hexdigest()
    refused = rf"sha256 {hashlib.sha256(data).hexdigest()}.*{named}"
    with pytest.raises(InvalidInput, match=refused), store.blob_writer(named) as writer:
        writer.write(data)
        writer.commit()
    assert not store.exists(named)
    assert leftovers(backend) == []


def test_an_abandoned_write_leaves_nothing(local_backend: Backend) -> None:
    store = local_backend.open()
    data = b"x" * 100_000
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(RuntimeError), store.blob_writer(digest) as writer:
        writer.write(data[:50_000])
        raise RuntimeError("the client went away")
    assert not store.exists(digest) and leftovers(local_backend) == []


def test_a_name_that_is_not_a_digest_is_refused(local_backend: Backend) -> None:
    with pytest.raises(InvalidInput), local_backend.open().blob_writer("../../etc/passwd"):
        pass
    assert leftovers(local_backend) == []
