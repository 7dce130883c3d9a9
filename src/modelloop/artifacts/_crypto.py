"""Encryption at rest for artifact blobs: keys, the blob format, streaming encrypt and decrypt.

**What is encrypted.** With a key configured (``MODELLOOP_ENCRYPTION_KEY``, base64 of 32 random
bytes, or ``MODELLOOP_ENCRYPTION_KEY_FILE``), every blob the artifact store writes is encrypted
with AES-256-GCM. Metadata (run names, params, metrics, artifact paths, digests) stays in the
metadata store as before; what the object store or disk holds is ciphertext.

**The digest names the plaintext.** A blob still lives at ``blobs/<sha256 of its plaintext>``.
Deduplication, lineage (a version's package digest, a dataset digest) and every digest already
recorded keep their meaning whether or not encryption is on, and rotating a key rewrites blobs in
place without touching a metadata row. The trade-off: anyone who can list the bucket sees the
sha256 of each plaintext, so they can confirm a guess ("is this exact, public file stored
here?") but learn nothing about content they cannot guess. Naming blobs by ciphertext instead
would hide that, at the price of dedup and of a metadata rewrite on every rotation; for models
and datasets that are not public files, the plaintext digest reveals nothing useful.

**The format** (version 1), one self-describing file per blob::

    header (43 bytes, bound into every chunk as associated data)
      magic      8  b"\\x89MLENC\\r\\n"
      version    1  1
      algorithm  1  1 = AES-256-GCM, per-blob key from HKDF-SHA256, STREAM nonces
      chunk      1  log2 of the plaintext chunk size (20: 1 MiB)
      reserved   1  0
      key id     8  first 8 bytes of HMAC-SHA256(key, "modelloop key id")
      salt      16  random; HKDF salt of this blob's own AES key
      prefix     7  random nonce prefix
    chunks: each the AES-GCM ciphertext of one plaintext chunk plus its 16-byte tag

Chunk ``i`` has the nonce ``prefix || i (4 bytes, big endian) || final (1 byte)``, and the
associated data ``header || final`` — plus, for the final chunk, the 32-byte digest the blob is
stored under. Every chunk but the last holds exactly one chunk size of plaintext; the last holds
the rest (nothing for an empty blob). So a flipped byte anywhere (header, ciphertext, tag),
chunks swapped or dropped, a blob cut at a chunk boundary or extended, or a blob moved to another
digest's path, each fail authentication. Because each blob has its own key (derived from the
master key and the random salt), nonces cannot repeat across blobs however many are written.
Readers hold at most two chunks in memory, and the store writes decrypted output to a temporary
file renamed into place only after every chunk authenticated and the plaintext hashed to the
digest.

**Plaintext blobs with a key configured** (written before encryption was turned on) are read as
before: their digest is still verified on every read, so they cannot be altered unnoticed, and
``modelloop keys rotate`` encrypts them. A blob that is neither valid ciphertext nor content
hashing to its digest is refused.

**Keys.** The key id, not the key, is stored in each blob; a reader picks the key by id among the
current key and the other keys it is given (``MODELLOOP_ENCRYPTION_OLD_KEYS``, comma separated,
and ``MODELLOOP_ENCRYPTION_OLD_KEY_FILES``, separated like ``PATH``). A blob under a key the
reader does not hold is refused with :class:`~modelloop.exceptions.EncryptionKeyError` naming
the key id; a known key id whose tag does not verify is
:class:`~modelloop.exceptions.ArtifactCorrupted`. No message shows a key or a part of one.

The ``cryptography`` package (extra ``modelloop[crypto]``) is imported only when a key is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from modelloop.exceptions import ArtifactCorrupted, EncryptionKeyError, InvalidInput

if TYPE_CHECKING:
    from modelloop._config import Settings

__all__ = [
    "HEADER_LEN",
    "MAGIC",
    "BlobHeader",
    "Decryptor",
    "EncryptionKey",
    "Encryptor",
    "Keyring",
    "missing_key",
    "parse_header",
    "read_exact",
    "require_cryptography",
]

MAGIC = b"\x89MLENC\r\n"
VERSION = 1
ALGORITHM = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
SALT_BYTES = 16
PREFIX_BYTES = 7
TAG_BYTES = 16
HEADER_LEN = len(MAGIC) + 4 + KEY_ID_BYTES + SALT_BYTES + PREFIX_BYTES  # 43
CHUNK_LOG2 = 20  # 1 MiB of plaintext per chunk
# Accepted on read: a damaged header must not make a reader allocate gigabytes.
_CHUNK_LOG2_RANGE = range(12, 27)  # 4 KiB .. 64 MiB
_MAX_CHUNKS = 2**32  # the counter's 4 bytes
_KEY_ID_LABEL = b"modelloop key id"
_HKDF_INFO = b"modelloop artifact blob v1"
_EXTRA_HINT = "pip install 'modelloop[crypto]'"


# -- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """A 32-byte AES-256 key and its public id (16 hex characters).

    ``repr`` shows the id only; the key bytes never appear in a message or a log.
    """

    secret: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_BYTES:
            raise InvalidInput(f"an encryption key is {KEY_BYTES} bytes")
        digest = hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).digest()
        object.__setattr__(self, "key_id", digest[:KEY_ID_BYTES].hex())

    @classmethod
    def generate(cls) -> EncryptionKey:
        """A new random key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str) -> EncryptionKey:
        """The key written as base64 of 32 bytes (surrounding whitespace ignored).

        ``source`` names where the text came from in the error, which never shows the text.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f"{source} is not a base64 encryption key; create one with "
                "`modelloop keys generate`"
            ) from None
        if len(raw) != KEY_BYTES:
            raise InvalidInput(
                f"{source} decodes to {len(raw)} bytes; an encryption key is base64 of "
                f"{KEY_BYTES} bytes (create one with `modelloop keys generate`)"
            )
        return cls(raw)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], source: str | None = None) -> EncryptionKey:
        """The key in a key file (base64 text, as ``modelloop keys generate --out`` writes)."""
        where = source or f"key file {os.fspath(path)!r}"
        try:
            with open(path, "rb") as f:
                data = f.read(4096)
        except FileNotFoundError:
            raise InvalidInput(f"{where} does not exist") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {where}: {exc.strerror}") from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput(f"{where} is not a base64 key file") from None
        return cls.from_text(text, where)

    def to_text(self) -> str:
        """The key as base64 text, the form the settings and key files take."""
        return base64.b64encode(self.secret).decode("ascii")


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key new blobs are encrypted with (``None``: written in plaintext) and the other keys
    accepted when reading, looked up by key id."""

    current: EncryptionKey | None = None
    others: tuple[EncryptionKey, ...] = ()

    @property
    def keys(self) -> tuple[EncryptionKey, ...]:
        """Every key, the current one first, without repeats."""
        found: dict[str, EncryptionKey] = {}
        for key in (self.current, *self.others):
            if key is not None:
                found.setdefault(key.key_id, key)
        return tuple(found.values())

    def find(self, key_id: str) -> EncryptionKey | None:
        """The key with this id, or None."""
        return next((k for k in self.keys if k.key_id == key_id), None)

    def rotated_to(self, new: EncryptionKey) -> Keyring:
        """A keyring writing with ``new`` and still reading every key of this one."""
        return Keyring(new, self.keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """The keyring of the settings' encryption fields; ``InvalidInput`` naming the setting
        when one is malformed, or naming the extra when ``cryptography`` is missing."""
        if settings.encryption_key and settings.encryption_key_file:
            raise InvalidInput(
                "both MODELLOOP_ENCRYPTION_KEY and MODELLOOP_ENCRYPTION_KEY_FILE are set; "
                "set one of them"
            )
        current = None
        if settings.encryption_key:
            current = EncryptionKey.from_text(settings.encryption_key, "MODELLOOP_ENCRYPTION_KEY")
        elif settings.encryption_key_file:
            current = EncryptionKey.from_file(
                settings.encryption_key_file,
                f"MODELLOOP_ENCRYPTION_KEY_FILE ({settings.encryption_key_file!r})",
            )
        others = [
            EncryptionKey.from_text(text, f"MODELLOOP_ENCRYPTION_OLD_KEYS (item {i + 1})")
            for i, text in enumerate(settings.encryption_old_keys)
        ]
        others += [
            EncryptionKey.from_file(path, f"MODELLOOP_ENCRYPTION_OLD_KEY_FILES ({path!r})")
            for path in settings.encryption_old_key_files
        ]
        keyring = cls(current, tuple(others))
        if keyring.keys:
            require_cryptography()
        return keyring


def require_cryptography() -> None:
    """``InvalidInput`` naming the extra to install when ``cryptography`` is missing."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise InvalidInput(
            f"an encryption key is set, and encrypting artifacts needs cryptography: {_EXTRA_HINT}"
        ) from None


# -- the format --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The parsed header of an encrypted blob."""

    raw: bytes
    version: int
    algorithm: int
    chunk_log2: int
    key_id: str
    salt: bytes
    prefix: bytes

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk."""
        return 1 << self.chunk_log2


def parse_header(raw: bytes, where: str) -> BlobHeader | None:
    """The header at the start of a blob; None when the blob does not start with the magic (a
    plaintext blob). ``ArtifactCorrupted`` naming ``where`` for a header this version cannot
    read."""
    if len(raw) < HEADER_LEN or not raw.startswith(MAGIC):
        return None
    version, algorithm, chunk_log2, reserved = raw[len(MAGIC) : len(MAGIC) + 4]
    if version != VERSION or algorithm != ALGORITHM or reserved != 0:
        raise ArtifactCorrupted(
            f"{where} has an encryption header of format {version}.{algorithm}, which this "
            f"modelloop does not read (it writes {VERSION}.{ALGORITHM}): the header is damaged, "
            "or a newer modelloop wrote it"
        )
    if chunk_log2 not in _CHUNK_LOG2_RANGE:
        raise ArtifactCorrupted(
            f"{where} has a damaged encryption header (chunk size 2^{chunk_log2})"
        )
    at = len(MAGIC) + 4
    key_id = raw[at : at + KEY_ID_BYTES].hex()
    at += KEY_ID_BYTES
    salt = raw[at : at + SALT_BYTES]
    prefix = raw[at + SALT_BYTES : HEADER_LEN]
    return BlobHeader(raw[:HEADER_LEN], version, algorithm, chunk_log2, key_id, salt, prefix)


def _new_header(key: EncryptionKey) -> BlobHeader:
    salt, prefix = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(PREFIX_BYTES)
    raw = (
        MAGIC
        + bytes([VERSION, ALGORITHM, CHUNK_LOG2, 0])
        + bytes.fromhex(key.key_id)
        + salt
        + prefix
    )
    return BlobHeader(raw, VERSION, ALGORITHM, CHUNK_LOG2, key.key_id, salt, prefix)


def _cipher(key: EncryptionKey, header: BlobHeader) -> Any:
    """AES-256-GCM under this blob's own key: HKDF-SHA256 of the master key and the salt."""
    require_cryptography()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    blob_key = HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt, info=_HKDF_INFO
    ).derive(key.secret)
    return AESGCM(blob_key)


def _nonce(header: BlobHeader, index: int, final: bool) -> bytes:
    if index >= _MAX_CHUNKS:
        raise InvalidInput(f"a blob has at most {_MAX_CHUNKS} chunks of {header.chunk_size} bytes")
    return header.prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def _aad(header: BlobHeader, final: bool, digest: str) -> bytes:
    return header.raw + (b"\x01" + bytes.fromhex(digest) if final else b"\x00")


class Encryptor:
    """Writes one encrypted blob to ``out``: the header now, chunks as plaintext arrives, the
    final chunk (bound to the blob's digest) in :meth:`finish`. Holds at most two chunks."""

    def __init__(self, key: EncryptionKey, out: IO[bytes]) -> None:
        self._header = _new_header(key)
        self._aead = _cipher(key, self._header)
        self._out = out
        self._buffer = bytearray()
        self._held: bytes | None = None  # a whole chunk that arrived as one piece
        self._index = 0
        out.write(self._header.raw)

    def write(self, data: bytes | memoryview) -> None:
        """Encrypt ``data`` (of any length) on the way to ``out``."""
        if not len(data):
            return
        # A full chunk is kept back until more data comes: only finish() knows which is last.
        if self._held is not None:
            self._emit(self._held, final=False, digest="")
            self._held = None
        size = self._header.chunk_size
        if not self._buffer and len(data) == size:  # the usual case: no copy into the buffer
            self._held = bytes(data)
            return
        self._buffer += data
        while len(self._buffer) > size:
            self._emit(bytes(self._buffer[:size]), final=False, digest="")
            del self._buffer[:size]

    def finish(self, digest: str) -> None:
        """Write the final chunk, binding the plaintext's sha256 ``digest``."""
        last = self._held if self._held is not None else bytes(self._buffer)
        self._emit(last, final=True, digest=digest)
        self._held, self._buffer = None, bytearray()

    def _emit(self, chunk: bytes, *, final: bool, digest: str) -> None:
        nonce = _nonce(self._header, self._index, final)
        self._out.write(self._aead.encrypt(nonce, chunk, _aad(self._header, final, digest)))
        self._index += 1


class Decryptor:
    """The plaintext chunks of an encrypted blob, each authenticated before it is yielded.

    ``ArtifactCorrupted`` naming ``where`` when a chunk does not authenticate (a changed byte,
    chunks swapped, dropped or added, a blob cut short or stored under another digest).
    """

    def __init__(self, key: EncryptionKey, header: BlobHeader, digest: str, where: str) -> None:
        self._key = key
        self._header = header
        self._digest = digest
        self._where = where

    def chunks(self, src: IO[bytes]) -> Iterator[bytes]:
        """Decrypt what follows the header in ``src``."""
        from cryptography.exceptions import InvalidTag

        aead = _cipher(self._key, self._header)
        size = self._header.chunk_size + TAG_BYTES
        index = 0
        current = read_exact(src, size)
        while True:
            following = read_exact(src, size) if len(current) == size else b""
            final = not following
            if len(current) < TAG_BYTES:
                raise self._refuse(index, "is cut short")
            try:
                plain = aead.decrypt(
                    _nonce(self._header, index, final),
                    current,
                    _aad(self._header, final, self._digest),
                )
            except InvalidTag:
                raise self._refuse(index, "does not authenticate") from None
            yield plain
            if final:
                return
            current, index = following, index + 1

    def _refuse(self, index: int, problem: str) -> ArtifactCorrupted:
        return ArtifactCorrupted(
            f"{self._where} is corrupted: encrypted chunk {index} {problem} under key "
            f"{self._header.key_id} (the blob was altered, truncated, reordered, or stored under "
            "another digest); it was not read"
        )


def missing_key(header: BlobHeader, keyring: Keyring, where: str) -> EncryptionKeyError:
    """The error for a blob under a key the keyring does not hold."""
    held = ", ".join(k.key_id for k in keyring.keys)
    if not held:
        return EncryptionKeyError(
            f"{where} is encrypted (key id {header.key_id}) and no encryption key is configured: "
            "set MODELLOOP_ENCRYPTION_KEY or MODELLOOP_ENCRYPTION_KEY_FILE"
        )
    return EncryptionKeyError(
        f"{where} is encrypted with key id {header.key_id}, which is not among the configured "
        f"keys ({held}): the wrong key is configured; add the key with that id to "
        "MODELLOOP_ENCRYPTION_OLD_KEYS or MODELLOOP_ENCRYPTION_OLD_KEY_FILES (or the blob's "
        "header is damaged)"
    )


def read_exact(src: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of ``src``."""
    data = src.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
