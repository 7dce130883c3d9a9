"""Artifact blobs on a modelloop server, with the public methods of
:class:`~modelloop.artifacts.ArtifactStore`: the client holds no bucket keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from modelloop.artifacts._store import (
    BlobInfo,
    _check_digest,
    _file_target,
    _open_source,
    _part_beside,
    _write_whole,
)
from modelloop.exceptions import ArtifactCorrupted, InvalidInput, NotFound
from modelloop.store._http._transport import API_PREFIX, Transport

__all__ = ["HttpArtifactStore"]

_CHUNK = 1 << 20


class HttpArtifactStore:
    """Blobs named by their sha256, stored by the server's artifact store.

    Uploads stream the file (its digest is computed first, and the server refuses a body that
    does not match it); downloads stream to a temporary file beside the destination, verified
    before it is renamed into place. Memory stays bounded by the chunk size.
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def __repr__(self) -> str:
        return f"HttpArtifactStore({self.root!r})"

    @property
    def root(self) -> str:
        """Where the blobs are: the server's artifact routes."""
        return f"{self._t.url}{API_PREFIX}/artifacts"

    def blob_path(self, digest: str) -> str:
        """The URL of the blob with this digest (whether or not it exists)."""
        _check_digest(digest)
        return f"{self.root}/blobs/{digest}"

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored on the server."""
        _check_digest(digest)
        response = self._t.send("HEAD", f"/artifacts/blobs/{digest}", ok=(404,))
        return response.status_code == 200

    # -- writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> BlobInfo:
        """Store ``data`` and return its digest and size."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"put_bytes takes bytes, not {type(data).__name__}")
        body = bytes(data)
        info = BlobInfo(hashlib.sha256(body).hexdigest(), len(body))
        if not self.exists(info.digest):
            self._upload(info, lambda: body)
        return info

    def put_file(
        self, local_path: str | os.PathLike[str], *, follow_symlinks: bool = True
    ) -> BlobInfo:
        """Store the content of a local file, streaming it; return its digest and size. A file
        changed between hashing and sending is refused by the server (``InvalidInput``)."""
        source = os.fspath(local_path)
        if os.path.isdir(source):
            raise InvalidInput(f"{source!r} is a directory; put_file stores one file")
        with _open_source(source, follow_symlinks) as src:
            hasher = hashlib.sha256()
            size = 0
            while chunk := src.read(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        info = BlobInfo(hasher.hexdigest(), size)
        if not self.exists(info.digest):

            def body() -> IO[bytes]:
                return _FileBody(source, follow_symlinks)  # type: ignore[return-value]

            self._upload(info, body)
        return info

    def _upload(self, info: BlobInfo, body: object) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(info.size)}
        self._t.send("PUT", f"/artifacts/blobs/{info.digest}", content=body, headers=headers)  # type: ignore[arg-type]

    def check_writable(self) -> None:
        """Ask the server whether its artifact store can be written (``StoreError`` if not)."""
        self._t.send("POST", "/artifacts/check")

    # -- reading -------------------------------------------------------------------------------

    def read_bytes(self, digest: str) -> bytes:
        """The content of a blob, verified against its digest."""
        return b"".join(self._chunks(digest))

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Write a blob to the local file ``dest`` (replacing it) and return ``dest``; verified
        before it is renamed into place, so a corrupted download leaves ``dest`` as it was."""
        target = _file_target(digest, dest)
        _write_whole(target, _part_beside(target), self._chunks(digest))
        return target

    def _chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's chunks; after the last, ``ArtifactCorrupted`` if they do not hash to
        ``digest`` (the server verified them too: this covers the way here)."""
        _check_digest(digest)
        hasher = hashlib.sha256()
        try:
            with self._t.stream(f"/artifacts/blobs/{digest}") as response:
                for chunk in response.iter_bytes(_CHUNK):
                    hasher.update(chunk)
                    yield chunk
        except NotFound:
            raise NotFound(f"no blob {digest} on the server {self._t.url}") from None
        if hasher.hexdigest() != digest:
            raise ArtifactCorrupted(
                f"blob {digest} downloaded from {self._t.url} is corrupted: its content has "
                f"sha256 {hasher.hexdigest()}"
            )

    # -- maintenance ---------------------------------------------------------------------------

    def cleanup_temp(self, older_than_s: float = 3600) -> int:
        """Nothing to clean on this side: the server cleans its own temporary files."""
        if older_than_s < 0:
            raise InvalidInput(f"older_than_s must be >= 0, not {older_than_s}")
        return 0


class _FileBody:
    """A file streamed as a request body, opened afresh for each attempt."""

    def __init__(self, path: str, follow_symlinks: bool) -> None:
        self._cm = _open_source(path, follow_symlinks)
        self._src = self._cm.__enter__()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._src.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
