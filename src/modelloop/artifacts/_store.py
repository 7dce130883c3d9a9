"""Content-addressed blob storage on a local directory or an S3-compatible object store."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelloop._fs import fsync_dir
from modelloop.exceptions import ArtifactCorrupted, InvalidInput, NotFound, StoreError

__all__ = ["ArtifactStore", "BlobInfo"]

_CHUNK = 1 << 20  # bytes read, hashed and written at a time
_READ_BLOCK = 8 << 20  # object-store read-ahead: bounds memory when streaming a large blob
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
# Object stores where an upload becomes visible only once it is complete, and whose fsspec file
# supports ``autocommit=False`` + ``commit()``/``discard()``. Add a protocol here only together
# with a test run against a real server for it.
_OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a"})


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its sha256 digest (64 lowercase hex characters) and its size in bytes."""

    digest: str
    size: int


class ArtifactStore:
    """Blobs named by the sha256 of their content, under a local directory or an ``s3://`` prefix.

    A blob lives at ``<root>/blobs/<first two hex digits>/<digest>``. The contract:

    * **Complete or absent.** A blob is visible under ``blobs/`` only once all of it is stored,
      whatever happens to the writing process. Locally it is written under ``<root>/tmp/``,
      fsynced and renamed into place; :meth:`cleanup_temp` removes what crashed writers left
      there. On an object store the digest is computed first and the upload goes to the final
      key, which the store shows only when the upload completes.
    * **Idempotent and concurrent.** One store may be used from many threads, and many processes
      may share a root. Storing the same content twice, even at once, leaves one blob.
    * **Verified reads.** Every read hashes the content as it streams and raises
      :class:`~modelloop.exceptions.ArtifactCorrupted`, naming the digest and the path, when it
      does not match.
    * **Bounded memory.** Files are streamed in chunks; only :meth:`read_bytes` and
      :meth:`put_bytes` hold a whole blob.
    * **Errors.** A malformed digest or argument raises ``InvalidInput``; a missing blob or
      source file ``NotFound``; any other failure of the file system or object store
      ``StoreError``.
    """

    def __init__(self, root: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        """Open the store at ``root``: a local path, a ``file://`` URL or an ``s3://bucket/prefix``.

        ``storage_options`` go to the fsspec file system of a remote root (for s3fs e.g.
        ``{"client_kwargs": {"endpoint_url": ...}}``); a local root does not use them.
        """
        if not isinstance(root, str) or not root.strip():
            raise InvalidInput(f"artifact root must be a non-empty path or URL, not {root!r}")
        match = _PROTOCOL.match(root)
        protocol = match.group(1).lower() if match else ""
        self._fs: Any = None
        if not protocol or protocol in _LOCAL_PROTOCOLS:
            local = root[match.end() :] if match else root
            self._root = os.path.abspath(os.path.expanduser(local))
        elif protocol in _OBJECT_STORE_PROTOCOLS:
            self._fs, base = _open_filesystem(root, storage_options or {})
            base = base.rstrip("/")
            if not base:
                raise InvalidInput(f"artifact root {root!r} names no bucket")
            self._root = f"{protocol}://{base}"
        else:
            supported = ", ".join(f"{p}://" for p in sorted(_OBJECT_STORE_PROTOCOLS))
            raise InvalidInput(
                f"artifact root {root!r} uses the unsupported protocol {protocol!r}; "
                f"use a local path, file:// or {supported}"
            )

    def __repr__(self) -> str:
        return f"ArtifactStore({self._root!r})"

    @property
    def root(self) -> str:
        """The root: an absolute local path, or a URL such as ``s3://bucket/prefix``."""
        return self._root

    def blob_path(self, digest: str) -> str:
        """Where the blob with this digest lives (whether or not it exists)."""
        _check_digest(digest)
        if self._fs is None:
            return os.path.join(self._root, "blobs", digest[:2], digest)
        return f"{self._root}/blobs/{digest[:2]}/{digest}"

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored (its content is not checked)."""
        path = self.blob_path(digest)
        with self._errors("check", path):
            if self._fs is None:
                return os.path.isfile(path)
            self._fs.invalidate_cache(path)  # another process may have written it since
            return bool(self._fs.exists(path))

    # -- writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> BlobInfo:
        """Store ``data`` and return its digest and size."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"put_bytes takes bytes, not {type(data).__name__}")
        view = memoryview(data).cast("B")
        chunks = [view[i : i + _CHUNK] for i in range(0, len(view), _CHUNK)]
        if self._fs is None:
            return self._write_local(chunks)
        info = BlobInfo(hashlib.sha256(view).hexdigest(), len(view))
        if not self.exists(info.digest):
            self._upload(chunks, info, "the given bytes")
        return info

    def put_file(
        self, local_path: str | os.PathLike[str], *, follow_symlinks: bool = True
    ) -> BlobInfo:
        """Store the content of a local file, streaming it, and return its digest and size.

        With ``follow_symlinks=False`` a path whose last component is a symbolic link is refused
        (``InvalidInput``) when it is opened, so a file swapped for a link after it was checked
        is not read.
        """
        source = os.fspath(local_path)
        if os.path.isdir(source):
            raise InvalidInput(f"{source!r} is a directory; put_file stores one file")
        if self._fs is None:
            with _open_source(source, follow_symlinks) as src:
                return self._write_local(_read_chunks(src))
        # An object store has no rename: hash first, then upload to the final key, re-hashing
        # what is sent so that a file changed in between is refused rather than misnamed.
        with _open_source(source, follow_symlinks) as src:
            info = _hash_chunks(_read_chunks(src))
        if not self.exists(info.digest):
            with _open_source(source, follow_symlinks) as src:
                self._upload(_read_chunks(src), info, repr(source))
        return info

    def _write_local(self, chunks: Iterable[bytes | memoryview]) -> BlobInfo:
        tmp_dir = os.path.join(self._root, "tmp")
        tmp = os.path.join(tmp_dir, f"{secrets.token_hex(12)}.part")
        with self._errors("write", tmp):
            _ensure_dir(tmp_dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as out:
                    info = _hash_chunks(chunks, out)
                    out.flush()
                    os.fsync(out.fileno())
                final = self.blob_path(info.digest)
                _ensure_dir(os.path.dirname(final))
                # Replacing an existing blob is harmless (same content) and repairs a damaged one.
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(os.path.dirname(final))
        return info

    def _upload(self, chunks: Iterable[bytes | memoryview], expected: BlobInfo, what: str) -> None:
        path = self.blob_path(expected.digest)
        with self._errors("write", path):
            # autocommit=False: parts are uploaded but the object appears only on commit(), so a
            # content mismatch or an error can still be thrown away with discard().
            out = self._fs.open(path, "wb", autocommit=False)
            try:
                sent = _hash_chunks(chunks, out)
                out.close()
                if sent != expected:
                    raise InvalidInput(
                        f"{what} changed while it was being stored (sha256 {expected.digest} "
                        f"before, {sent.digest} during the upload); nothing was stored"
                    )
                out.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    out.discard()
                raise

    def check_writable(self) -> None:
        """Write and remove a small probe under ``<root>/tmp/``, so that a root that cannot be
        written (a missing bucket, no permission, a read-only folder) is found before any work
        is done: ``StoreError`` naming the root and the fix."""
        name = f"write-check-{secrets.token_hex(8)}"
        try:
            if self._fs is None:
                tmp_dir = os.path.join(self._root, "tmp")
                _ensure_dir(tmp_dir)
                probe = os.path.join(tmp_dir, name)
                with open(probe, "xb"):
                    pass
                os.unlink(probe)
                return
            probe = f"{self._root}/tmp/{name}"
            self._fs.pipe_file(probe, b"")
            self._fs.rm_file(probe)
        except FileNotFoundError as exc:
            bucket = self._root.partition("://")[2].split("/")[0]
            what = f"the bucket {bucket!r} does not exist" if self._fs else "a folder is missing"
            raise StoreError(
                f"artifact root {self._root}: {what} ({exc}); create it, or point "
                "MODELLOOP_ARTIFACT_ROOT at one that exists"
            ) from exc
        except Exception as exc:  # permissions, credentials, an unreachable endpoint
            raise StoreError(
                f"artifact root {self._root} cannot be written: {type(exc).__name__}: {exc}; "
                "check its permissions (for S3: the credentials, the bucket policy and "
                "AWS_ENDPOINT_URL)"
            ) from exc

    # -- reading -------------------------------------------------------------------------------

    def read_bytes(self, digest: str) -> bytes:
        """The content of a blob, verified against its digest."""
        src, path = self._open_blob(digest)
        with src:
            return b"".join(self._verify(src, digest, path))

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Write a blob to the local file ``dest`` (replacing it) and return ``dest``.

        The content is streamed to a temporary file beside ``dest`` and verified before it is
        renamed into place: when verification fails, ``dest`` is left as it was.
        """
        target = Path(dest)
        _check_digest(digest)
        if target.is_dir():
            raise InvalidInput(f"destination {str(target)!r} is a directory")
        src, path = self._open_blob(digest)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
        with src, self._errors("write", str(tmp)):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in self._verify(src, digest, path):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        return target

    def iter_blob(self, digest: str) -> Iterator[bytes]:
        """The content of a blob as chunks, verified as it streams: after the last chunk,
        ``ArtifactCorrupted`` if they do not hash to ``digest``. ``NotFound`` is raised now,
        before the first chunk (for streaming a blob on, e.g. as an HTTP response)."""
        src, path = self._open_blob(digest)

        def chunks() -> Iterator[bytes]:
            with src:
                yield from self._verify(src, digest, path)

        return chunks()

    def _open_blob(self, digest: str) -> tuple[IO[bytes], str]:
        """The open blob and its path; ``NotFound`` if there is no such blob."""
        path = self.blob_path(digest)
        with self._errors("read", path):
            try:
                if self._fs is None:
                    return open(path, "rb"), path
                return self._fs.open(path, "rb", block_size=_READ_BLOCK), path
            except FileNotFoundError:
                raise NotFound(
                    f"no blob {digest} in the artifact store {self._root} (looked at {path})"
                ) from None

    def _verify(self, src: IO[bytes], digest: str, path: str) -> Iterator[bytes]:
        """Yield the chunks of ``src``; after the last, ``ArtifactCorrupted`` if they do not
        hash to ``digest``."""
        hasher = hashlib.sha256()
        with self._errors("read", path):
            for chunk in _read_chunks(src):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise ArtifactCorrupted(
                f"blob {digest} at {path} is corrupted: its content has sha256 {hasher.hexdigest()}"
            )

    # -- maintenance ---------------------------------------------------------------------------

    def cleanup_temp(self, older_than_s: float = 3600) -> int:
        """Delete temporary files untouched for ``older_than_s`` seconds; return how many.

        They are what writers that crashed left under ``<root>/tmp/``; a live writer touches its
        file continuously and is not disturbed. Object stores keep no temporary files (abandoned
        multipart uploads are the bucket's lifecycle rules' job), so there this returns 0.
        """
        if older_than_s < 0:
            raise InvalidInput(f"older_than_s must be >= 0, not {older_than_s}")
        tmp_dir = os.path.join(self._root, "tmp")
        if self._fs is not None or not os.path.isdir(tmp_dir):
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        with self._errors("clean up", tmp_dir), os.scandir(tmp_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    with contextlib.suppress(FileNotFoundError):  # another cleaner was first
                        os.unlink(entry.path)
                        removed += 1
        return removed

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        """Turn file-system and object-store errors into modelloop errors naming the path."""
        try:
            yield
        except FileNotFoundError as exc:
            raise NotFound(f"artifact store {self._root}: cannot {action} {path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"artifact store {self._root}: cannot {action} {path}: {exc}") from exc


def _open_filesystem(root: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(root, **storage_options)
    except ImportError as exc:
        raise InvalidInput(
            f"artifact root {root!r} needs s3fs: pip install 'modelloop[s3]' ({exc})"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"artifact root {root!r}: bad storage_options: {exc}") from exc
    return fs, str(path)


def _check_digest(digest: str) -> None:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(
            f"invalid blob digest {digest!r}: expected a sha256 as 64 lowercase hex characters"
        )


@contextlib.contextmanager
def _open_source(path: str, follow_symlinks: bool = True) -> Iterator[IO[bytes]]:
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        if os.path.islink(path):  # also where O_NOFOLLOW does not exist
            raise InvalidInput(f"local file {path!r} is a symbolic link, which is not followed")
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        src = os.fdopen(os.open(path, flags), "rb")
    except FileNotFoundError:
        raise NotFound(f"local file {path!r} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise InvalidInput(
                f"local file {path!r} is a symbolic link, which is not followed"
            ) from None
        raise InvalidInput(f"cannot read local file {path!r}: {exc}") from exc
    with src:
        yield src


def _read_chunks(src: IO[bytes]) -> Iterator[bytes]:
    while chunk := src.read(_CHUNK):
        yield chunk


def _hash_chunks(chunks: Iterable[bytes | memoryview], out: IO[bytes] | None = None) -> BlobInfo:
    """Digest and size of the chunks, copying them to ``out`` on the way if given."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return BlobInfo(hasher.hexdigest(), size)


def _ensure_dir(path: str) -> None:
    """Create ``path`` and missing parents, fsyncing each parent so the new entries are durable."""
    if os.path.isdir(path):
        return
    _ensure_dir(os.path.dirname(path))
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    fsync_dir(os.path.dirname(path))
