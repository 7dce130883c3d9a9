"""A large blob written to or read from a local artifact root does not stay in the page cache
behind the writer or the reader (it is dropped every 64 MiB), while a small one stays cached; the
content is stored and read back whole either way. Residency is read with util-linux's
``fincore``, which reports how much of a file the page cache holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modelloop.artifacts import ArtifactStore, EncryptionKey, Keyring

MIB = 1 << 20


def _memory_backed(folder: Path) -> bool:
    """Whether ``folder`` is on a file system held in memory (tmpfs), whose pages cannot be
    dropped: the longest mount point of /proc/mounts that holds it says."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        point = fields[1]
        if str(folder).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fields[2]
    return kind in {"tmpfs", "ramfs"}


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    if shutil.which("fincore") is None:
        pytest.skip("needs util-linux's fincore")
    if not (hasattr(os, "posix_fadvise") and hasattr(os, "fdatasync")):
        pytest.skip("needs posix_fadvise and fdatasync")
    if _memory_backed(tmp_path.resolve()):
        pytest.skip("the temporary folder is in memory (tmpfs): its pages cannot be dropped")
    return tmp_path


def cached_bytes(path: str | Path) -> int:
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def cache_file(path: Path) -> None:
    """Read a file whole, so that it is in the page cache."""
    with open(path, "rb") as f:
        while f.read(MIB):
            pass


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_large_blob_is_written_through_the_cache_and_read_back_whole(
    tmp_path: Path, encrypted: bool
) -> None:
    keyring = Keyring(EncryptionKey.generate()) if encrypted else Keyring()
    store = ArtifactStore(str(tmp_path / "root"), keyring=keyring)
    data = os.urandom(150 * MIB + 17)
    digest = hashlib.sha256(data).hexdigest()
    with store.blob_writer(digest) as writer:
        for i in range(0, len(data), MIB):
            writer.write(data[i : i + MIB])
        writer.commit()
    blob = store.blob_path(digest)
    # two releases of 64 MiB happened; only the tail written since the last one is cached
    assert cached_bytes(blob) < 40 * MIB
    assert store.read_bytes(digest) == data

    source = tmp_path / "source.bin"
    source.write_bytes(data[::-1])
    info = store.put_file(source)
    assert cached_bytes(store.blob_path(info.digest)) < 40 * MIB
    out = store.get_file(info.digest, tmp_path / "back.bin")
    assert out.read_bytes() == data[::-1]


def test_reading_a_large_blob_drops_what_was_read_behind_the_reader(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "root"))
    data = os.urandom(150 * MIB)
    info = store.put_bytes(data)
    blob = Path(store.blob_path(info.digest))
    cache_file(blob)
    assert cached_bytes(blob) > 140 * MIB
    hasher = hashlib.sha256()
    for chunk in store.iter_blob(info.digest):
        hasher.update(chunk)
    assert hasher.hexdigest() == info.digest
    assert cached_bytes(blob) < 40 * MIB


def test_a_small_blob_stays_cached(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "root"))
    data = os.urandom(20 * MIB)
    info = store.put_bytes(data)
    assert store.read_bytes(info.digest) == data
    assert cached_bytes(store.blob_path(info.digest)) >= 0.9 * len(data)
