"""Content-addressed blob storage on a local directory or an S3-compatible object store,
optionally encrypted at rest.

An encrypted blob is still named by the sha256 of its plaintext, so dedup, lineage and recorded
digests do not depend on encryption or on the key, and a key rotation rewrites blobs in place
without touching metadata; the cost is that a reader of the bucket listing can confirm a guessed
file. The format, the key handling and that trade-off: :mod:`modelloop.artifacts._crypto`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import io
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from modelloop._fs import fsync_dir
from modelloop.artifacts._crypto import (
    HEADER_LEN,
    MAGIC,
    Decryptor,
    Encryptor,
    Keyring,
    missing_key,
    parse_header,
    read_exact,
)
from modelloop.exceptions import (
    ArtifactCorrupted,
    EncryptionKeyError,
    InvalidInput,
    ModelloopError,
    NotFound,
    StoreError,
)

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
_T = TypeVar("_T")


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
    * **Encryption at rest.** With a ``keyring`` whose ``current`` key is set, every blob
      written is AES-256-GCM encrypted, still named by the sha256 of its plaintext; reads
      decrypt with the key whose id the blob names, authenticating every chunk before its
      plaintext is used, and read plaintext blobs as before (their digest is verified).
      :meth:`rewrite` moves a blob to the current key. Details in
      :mod:`modelloop.artifacts._crypto`.
    * **Errors.** A malformed digest or argument raises ``InvalidInput``; a missing blob or
      source file ``NotFound``; a blob under a key the keyring lacks ``EncryptionKeyError``;
      any other failure of the file system or object store ``StoreError``.
    """

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        """Open the store at ``root``: a local path, a ``file://`` URL or an ``s3://bucket/prefix``.

        ``storage_options`` go to the fsspec file system of a remote root (for s3fs e.g.
        ``{"client_kwargs": {"endpoint_url": ...}}``); a local root does not use them.
        ``keyring`` holds the encryption keys (default: none; blobs are written in plaintext).
        """
        self._keyring = keyring if keyring is not None else Keyring()
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
    def keyring(self) -> Keyring:
        """The key new blobs are encrypted with (if any) and the keys accepted for reads."""
        return self._keyring

    def with_keyring(self, keyring: Keyring) -> ArtifactStore:
        """The same root (and file system) with other keys."""
        other = copy.copy(self)
        other._keyring = keyring
        return other

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
        if not self._stored_as_wanted(info.digest):
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
        if not self._stored_as_wanted(info.digest):
            with _open_source(source, follow_symlinks) as src:
                self._upload(_read_chunks(src), info, repr(source))
        return info

    def _stored_as_wanted(self, digest: str) -> bool:
        """Whether an object store already holds this blob as this store would write it: any
        blob when writing plaintext, else one under the current key. (Locally every write
        replaces the blob, which also re-encrypts a plaintext one.)"""
        if self._keyring.current is None:
            return self.exists(digest)
        try:  # reading the header also answers whether the blob exists: one request, not two
            return self.key_id(digest) == self._keyring.current.key_id
        except ModelloopError:  # absent, or a damaged header: write it again
            return False

    def _write_local(self, chunks: Iterable[bytes | memoryview]) -> BlobInfo:
        tmp_dir = os.path.join(self._root, "tmp")
        tmp = os.path.join(tmp_dir, f"{secrets.token_hex(12)}.part")
        with self._errors("write", tmp):
            _ensure_dir(tmp_dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as out:
                    info = self._write_stream(chunks, _releasing(out))
                    out.flush()
                    os.fsync(out.fileno())
                self._rename_into_place(tmp, info.digest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return info

    def _rename_into_place(self, tmp: str, digest: str) -> None:
        """Move a complete, synced temporary file under ``<root>/tmp/`` to the blob's path."""
        final = self.blob_path(digest)
        _ensure_dir(os.path.dirname(final))
        # Replacing an existing blob is harmless (same content) and repairs a damaged one.
        os.replace(tmp, final)
        fsync_dir(os.path.dirname(final))

    @contextlib.contextmanager
    def blob_writer(self, digest: str) -> Iterator[BlobWriter]:
        """A blob written by pushing its content piece by piece (e.g. as an HTTP body arrives),
        stored under ``digest`` only if the content hashes to it.

        On a local root the content goes once to a temporary file in the store (encrypted on
        the way when a key is set) that :meth:`BlobWriter.commit` renames into place; on an
        object store it is staged in a local temporary file and uploaded on commit. Leaving the
        block without a commit, or with an error, leaves nothing behind."""
        _check_digest(digest)
        if self._fs is None:
            tmp_dir = os.path.join(self._root, "tmp")
        else:
            import tempfile

            tmp_dir = tempfile.gettempdir()
        tmp = os.path.join(tmp_dir, f"{secrets.token_hex(12)}.part")
        with self._errors("write", tmp):
            _ensure_dir(tmp_dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        out = os.fdopen(fd, "wb")
        encrypt = self._fs is None and self._keyring.current is not None
        writer = BlobWriter(self, digest, tmp, out, encrypt)
        try:
            yield writer
        finally:
            out.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _write_stream(self, chunks: Iterable[bytes | memoryview], out: IO[bytes]) -> BlobInfo:
        """Write the chunks to ``out``, encrypted under the current key if there is one; return
        the digest and size of the plaintext."""
        key = self._keyring.current
        if key is None:
            return _hash_chunks(chunks, out.write)
        encryptor = Encryptor(key, out)
        info = _hash_chunks(chunks, encryptor.write)
        encryptor.finish(info.digest)
        return info

    def _upload(
        self, chunks: Iterable[bytes | memoryview], expected: BlobInfo, what: str
    ) -> BlobInfo:
        """Upload to the blob's final key, where it appears only once complete, and only when
        what was sent is ``expected`` (a size of -1 is not checked)."""
        path = self.blob_path(expected.digest)
        with self._errors("write", path):
            # autocommit=False: parts are uploaded but the object appears only on commit(), so a
            # content mismatch or an error can still be thrown away with discard().
            out = self._fs.open(path, "wb", autocommit=False)
            try:
                sent = self._write_stream(chunks, out)
                out.close()
                if sent.digest != expected.digest or expected.size not in (-1, sent.size):
                    raise InvalidInput(
                        f"{what} changed while it was being stored (sha256 {expected.digest} "
                        f"before, {sent.digest} during the upload); nothing was stored"
                    )
                out.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    out.discard()
                raise
            self._fs.invalidate_cache(path)
        return sent

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
        """The content of a blob, verified against its digest (and decrypted)."""
        return self._read(digest, lambda chunks: b"".join(chunks))

    def get_file(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Write a blob to the local file ``dest`` (replacing it) and return ``dest``.

        The content is streamed to a temporary file beside ``dest`` and verified (every
        encrypted chunk authenticated, the whole hashed) before it is renamed into place: when
        verification fails, ``dest`` is left as it was.
        """
        target = _file_target(digest, dest)

        def write(chunks: Iterator[bytes]) -> Path:
            tmp = _part_beside(target)
            with self._errors("write", str(tmp)):
                _write_whole(target, tmp, chunks)
            return target

        return self._read(digest, write)

    def iter_blob(self, digest: str) -> Iterator[bytes]:
        """The content of a blob as verified plaintext chunks (decrypted when it is encrypted):
        after the last chunk, ``ArtifactCorrupted`` if they do not hash to ``digest``.
        ``NotFound`` is raised now, before the first chunk (for streaming a blob on, e.g. as an
        HTTP response)."""
        path = self.blob_path(digest)
        src = self._open_blob(digest, path)

        def chunks() -> Iterator[bytes]:
            sent = False
            try:
                with src:
                    for chunk in self._verify(src, digest, path, True):
                        sent = True
                        yield chunk
            except _PlaintextAfterAll:  # as _read does, unless decrypted bytes already went out
                if sent:
                    raise ArtifactCorrupted(
                        f"blob {digest} at {path} is plaintext that begins with a valid "
                        "encrypted chunk; read it again (e.g. with get_file)"
                    ) from None
                with self._open_blob(digest, path) as raw:
                    yield from self._verify(raw, digest, path, False)

        return chunks()

    def rewrite(self, digest: str, *, progress: Callable[[int], None] | None = None) -> BlobInfo:
        """Rewrite a stored blob under the current key (in plaintext when there is none).

        The blob is read as :meth:`get_file` reads it, so a damaged blob or a missing key fails
        before anything is replaced, and the new version replaces the old one atomically: at
        every moment the blob is whole under its old or its new key. ``progress`` is called
        with the plaintext bytes of each chunk once it has been handed to the writer.
        """
        path = self.blob_path(digest)  # also checks the digest

        def store(chunks: Iterator[bytes]) -> BlobInfo:
            def counted() -> Iterator[bytes]:
                for chunk in chunks:
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))

            if self._fs is None:
                return self._write_local(counted())
            return self._upload(counted(), BlobInfo(digest, -1), path)

        return self._read(digest, store)

    def key_id(self, digest: str) -> str | None:
        """The id of the key a stored blob is encrypted under; None for a plaintext blob.

        Only the header is read: the blob is not authenticated. ``ArtifactCorrupted`` for a
        header this version cannot read.
        """
        path = self.blob_path(digest)
        src = self._open_blob(digest, path)
        with src, self._errors("read", path):
            head = read_exact(src, HEADER_LEN)
        header = parse_header(head, f"blob {digest} at {path}")
        return header.key_id if header is not None else None

    def digests(self) -> Iterator[str]:
        """The digests of every stored blob, in order (files that are not blobs are skipped)."""
        base = f"{self._root}/blobs" if self._fs is not None else os.path.join(self._root, "blobs")
        with self._errors("list", base):
            if self._fs is not None:
                self._fs.invalidate_cache(base)
                try:
                    names = self._fs.find(base)
                except FileNotFoundError:
                    return
                found = sorted(
                    n.rsplit("/", 1)[-1] for n in names if _is_blob_name(n.rsplit("/", 2)[-2:])
                )
                yield from found
                return
            if not os.path.isdir(base):
                return
            for prefix in sorted(os.listdir(base)):
                folder = os.path.join(base, prefix)
                if not os.path.isdir(folder):
                    continue
                yield from sorted(n for n in os.listdir(folder) if _is_blob_name([prefix, n]))

    def _read(self, digest: str, consume: Callable[[Iterator[bytes]], _T]) -> _T:
        """``consume(verified plaintext chunks)``, retried as plaintext for a blob that merely
        starts like an encrypted one (content that hashes to its digest is what was stored)."""
        path = self.blob_path(digest)
        try:
            return self._read_once(digest, path, consume, decrypt=True)
        except _PlaintextAfterAll:
            return self._read_once(digest, path, consume, decrypt=False)

    def _read_once(
        self, digest: str, path: str, consume: Callable[[Iterator[bytes]], _T], *, decrypt: bool
    ) -> _T:
        src = self._open_blob(digest, path)
        with src:
            return consume(self._verify(src, digest, path, decrypt))

    def _open_blob(self, digest: str, path: str) -> IO[bytes]:
        """The open blob; ``NotFound`` if there is no such blob."""
        with self._errors("read", path):
            try:
                if self._fs is None:
                    return _BlobReader(path) if _CAN_RELEASE else open(path, "rb")
                # another process may have rewritten it (a key rotation): no cached size or ETag
                self._fs.invalidate_cache(path)
                return self._fs.open(path, "rb", block_size=_READ_BLOCK)  # type: ignore[no-any-return]
            except FileNotFoundError:
                raise NotFound(
                    f"no blob {digest} in the artifact store {self._root} (looked at {path})"
                ) from None

    def _verify(self, src: IO[bytes], digest: str, path: str, decrypt: bool) -> Iterator[bytes]:
        """Yield the plaintext chunks of ``src``; after the last, ``ArtifactCorrupted`` if they
        do not hash to ``digest``."""
        hasher = hashlib.sha256()
        with self._errors("read", path):
            for chunk in self._plaintext(src, digest, path, decrypt):
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != digest:
            raise ArtifactCorrupted(
                f"blob {digest} at {path} is corrupted: its content has sha256 {hasher.hexdigest()}"
            )

    def _plaintext(self, src: IO[bytes], digest: str, path: str, decrypt: bool) -> Iterator[bytes]:
        head = read_exact(src, HEADER_LEN)
        if not decrypt or not head.startswith(MAGIC):
            if head:
                yield head
            yield from _read_chunks(src)
            return
        where = f"blob {digest} at {path}"
        try:
            header = parse_header(head, where)
            if header is None:  # shorter than a header: only plaintext can be that short
                raise ArtifactCorrupted(f"{where} is corrupted: cut short inside its header")
            key = self._keyring.find(header.key_id)
            if key is None:
                raise missing_key(header, self._keyring, where)
            yield from Decryptor(key, header, digest, where).chunks(src)
        except (ArtifactCorrupted, EncryptionKeyError):
            if self._raw_digest(digest, path) == digest:
                raise _PlaintextAfterAll from None
            raise

    def _raw_digest(self, digest: str, path: str) -> str:
        """The sha256 of the stored bytes as they are."""
        with self._open_blob(digest, path) as src, self._errors("read", path):
            return _hash_chunks(_read_chunks(src)).digest

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


class BlobWriter:
    """Content pushed into :meth:`ArtifactStore.blob_writer`: :meth:`write` the pieces in
    order, then :meth:`commit`."""

    def __init__(
        self, store: ArtifactStore, digest: str, tmp: str, out: IO[bytes], encrypt: bool
    ) -> None:
        self._store, self._digest, self._tmp, self._out = store, digest, tmp, out
        self._hasher = hashlib.sha256()
        self.size = 0
        self._encryptor: Encryptor | None = None
        file = _releasing(out) if store._fs is None else out
        if encrypt:
            key = store._keyring.current
            assert key is not None
            self._encryptor = Encryptor(key, file)
        self._sink = self._encryptor.write if self._encryptor is not None else file.write

    def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self.size += len(data)
        with self._store._errors("write", self._tmp):
            self._sink(data)

    def commit(self) -> BlobInfo:
        """Store the blob; ``InvalidInput`` (nothing stored) when the content written does not
        hash to the digest it was announced under."""
        got = self._hasher.hexdigest()
        if got != self._digest:
            raise InvalidInput(
                f"the content has sha256 {got}, not {self._digest} as named; nothing stored"
            )
        info = BlobInfo(got, self.size)
        store = self._store
        with store._errors("write", self._tmp):
            if self._encryptor is not None:
                self._encryptor.finish(got)
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            if store._fs is not None:
                return store.put_file(self._tmp)
            store._rename_into_place(self._tmp, got)
        return info


_RELEASE_EVERY = 64 << 20
# where the page cache can be told to drop a file's pages (not on macOS or Windows)
_CAN_RELEASE = hasattr(os, "posix_fadvise") and hasattr(os, "fdatasync")


def _drop_cached(fd: int, start: int, end: int) -> int:
    """Drop the clean pages of bytes ``start`` to ``end`` of ``fd`` from the page cache;
    return ``end``, where the next range starts."""
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    return end


class _CacheReleasing:
    """A file being written as a blob, synced to disk and dropped from the page cache every
    64 MiB as it grows. A blob is written once and seldom read back at once, so a large upload
    does not push out of memory what is read often (the database, small hot blobs); nor does
    its writing stall on fresh memory for the whole blob. A blob smaller than 64 MiB stays
    cached. Only ``write`` is used by the writers."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._released = 0  # the file's bytes before this offset are on disk and uncached
        self._pending = 0  # bytes written since then

    def write(self, data: bytes | memoryview) -> int:
        written = self._out.write(data)
        self._pending += len(data)
        if self._pending >= _RELEASE_EVERY:
            self._out.flush()
            os.fdatasync(self._out.fileno())  # only clean pages can be dropped
            self._released = _drop_cached(self._out.fileno(), self._released, self._out.tell())
            self._pending = 0
        return written


class _BlobReader(io.FileIO):
    """A local blob opened for reading, whose pages are dropped from the page cache behind the
    reader every 64 MiB: streaming a large blob out does not push out what is read often. A
    blob smaller than that stays cached."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "r")
        self._released = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data is None:  # only for non-blocking files, which a blob never is
            return b""
        position = self.tell()
        if position - self._released >= _RELEASE_EVERY:
            self._released = _drop_cached(self.fileno(), self._released, position)
        return data


def _releasing(out: IO[bytes]) -> IO[bytes]:
    """``out`` behind a :class:`_CacheReleasing` where pages can be dropped (typed as the file
    the writers take: they only call ``write``), else ``out`` itself."""
    return cast("IO[bytes]", _CacheReleasing(out)) if _CAN_RELEASE else out


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


def _file_target(digest: str, dest: str | os.PathLike[str]) -> Path:
    """The local file a blob is written to by ``get_file``, once digest and path are checked."""
    target = Path(dest)
    _check_digest(digest)
    if target.is_dir():
        raise InvalidInput(f"destination {str(target)!r} is a directory")
    return target


def _part_beside(target: Path) -> Path:
    """A new hidden temporary name in the folder of ``target``."""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.part"


def _write_whole(target: Path, tmp: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``tmp``, sync it and rename it to ``target``: ``target`` is replaced
    whole or left as it was (``tmp`` is removed on any failure, a bad chunk included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _read_chunks(src: IO[bytes]) -> Iterator[bytes]:
    while chunk := src.read(_CHUNK):
        yield chunk


def _hash_chunks(
    chunks: Iterable[bytes | memoryview],
    write: Callable[[bytes | memoryview], object] | None = None,
) -> BlobInfo:
    """Digest and size of the chunks, passing them to ``write`` on the way if given."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
        if write is not None:
            write(chunk)
    return BlobInfo(hasher.hexdigest(), size)


def _is_blob_name(parts: list[str]) -> bool:
    """Whether ``[folder, name]`` is ``[<first two hex digits>, <digest>]``."""
    return len(parts) == 2 and bool(_DIGEST.fullmatch(parts[1])) and parts[1][:2] == parts[0]


class _PlaintextAfterAll(Exception):
    """A blob that starts like an encrypted one but whose stored bytes hash to its digest."""


def _ensure_dir(path: str) -> None:
    """Create ``path`` and missing parents, fsyncing each parent so the new entries are durable."""
    if os.path.isdir(path):
        return
    _ensure_dir(os.path.dirname(path))
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    fsync_dir(os.path.dirname(path))
