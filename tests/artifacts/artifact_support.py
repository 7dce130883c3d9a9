"""Helpers the artifact-store tests share: large files and the memory a round trip takes."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

from modelloop.artifacts import ArtifactStore, BlobInfo

MiB = 2**20


def write_large_file(path: Path, size: int) -> str:
    """Write ``size`` bytes (whole MiB, each different) to ``path``; their SHA-256 digest."""
    block = os.urandom(MiB)
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = i.to_bytes(4, "big") + block[4:]
            hasher.update(chunk)
            f.write(chunk)
    return hasher.hexdigest()


def round_trip_peaks(store: ArtifactStore, source: Path, dest: Path) -> tuple[BlobInfo, int, int]:
    """Store ``source`` and read it back to ``dest``: the blob's info and the peak of traced
    memory during the put and during the get, in bytes."""
    tracemalloc.start()
    try:
        info = store.put_file(source)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        store.get_file(info.digest, dest)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info, put_peak, get_peak
