"""Encrypted blobs: round trips on both backends, every kind of damage refused, keys from settings.

The blob layout these tests damage on purpose is the one documented in
:mod:`modelloop.artifacts._crypto`: a 43-byte header, then chunks of 1 MiB of ciphertext plus a
16-byte tag, the last one shorter.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from artifact_support import MiB, round_trip_peaks, write_large_file

from modelloop import Settings
from modelloop.artifacts import ArtifactStore, BlobInfo, EncryptionKey, Keyring
from modelloop.artifacts._crypto import Decryptor, Encryptor, parse_header
from modelloop.exceptions import ArtifactCorrupted, EncryptionKeyError, InvalidInput

if TYPE_CHECKING:
    from conftest import Backend

HEADER = 43
TAG = 16
CT_CHUNK = MiB + TAG  # one full chunk of ciphertext with its tag


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rel(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def keyed(backend: Backend, *keys: EncryptionKey) -> ArtifactStore:
    """A store on the backend's root writing with ``keys[0]`` and reading with all of them."""
    keyring = Keyring(keys[0], keys[1:]) if keys else Keyring()
    return ArtifactStore(backend.root, storage_options=backend.storage_options, keyring=keyring)


@pytest.fixture
def key() -> EncryptionKey:
    return EncryptionKey.generate()


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB + 12345],
    ids=lambda n: f"{n}B",
)
def test_round_trip_and_ciphertext_on_disk(
    backend: Backend, tmp_path: Path, key: EncryptionKey, size: int
) -> None:
    store = keyed(backend, key)
    data = os.urandom(size)

    info = store.put_bytes(data)

    assert info == BlobInfo(sha(data), size)  # the digest names the plaintext
    raw = backend.read_raw(rel(info.digest))
    chunks = max(1, -(-size // MiB))  # an empty blob still has one (empty) final chunk
    assert len(raw) == HEADER + size + chunks * TAG
    assert raw[:8] == b"\x89MLENC\r\n" and raw[12:20].hex() == key.key_id
    if size >= 64:
        assert data[:64] not in raw and data[-64:] not in raw
    assert store.read_bytes(info.digest) == data
    assert store.get_file(info.digest, tmp_path / "out.bin").read_bytes() == data
    assert store.key_id(info.digest) == key.key_id


def test_readable_text_is_not_on_disk(backend: Backend, key: EncryptionKey) -> None:
    store = keyed(backend, key)
    secret = b"customer_id,income,diagnosis\n" * 2000
    info = store.put_bytes(secret)
    raw = backend.read_raw(rel(info.digest))
    assert b"customer_id" not in raw and b"diagnosis" not in raw
    assert store.read_bytes(info.digest) == secret


def test_same_content_twice_gives_different_ciphertext(
    local_backend: Backend, key: EncryptionKey
) -> None:
    store = keyed(local_backend, key)
    data = b"same content" * 100
    first = store.put_bytes(data)
    before = local_backend.read_raw(rel(first.digest))
    second = store.put_bytes(data)  # locally a write replaces the blob: fresh salt and nonce

    after = local_backend.read_raw(rel(second.digest))
    assert first == second
    assert before[:12] == after[:12] and before[20:43] != after[20:43]  # new salt and prefix
    assert before[43:] != after[43:]
    assert store.read_bytes(first.digest) == data


def test_put_file_streams_and_encrypts(
    backend: Backend, tmp_path: Path, key: EncryptionKey
) -> None:
    source = tmp_path / "model.bin"
    data = os.urandom(6 * MiB + 7)  # on S3: a multipart upload of two parts
    source.write_bytes(data)
    store = keyed(backend, key)

    info = store.put_file(source)
    dest = store.get_file(info.digest, tmp_path / "copy" / "model.bin")

    assert info == BlobInfo(sha(data), len(data))
    assert dest.read_bytes() == data
    assert len(backend.read_raw(rel(info.digest))) == HEADER + len(data) + 7 * TAG
    assert os.listdir(dest.parent) == ["model.bin"]


def test_50mb_file_stays_in_bounded_memory(
    local_backend: Backend, tmp_path: Path, key: EncryptionKey
) -> None:
    size = 50 * MiB
    source, dest = tmp_path / "large.bin", tmp_path / "large.copy"
    expected = write_large_file(source, size)
    store = keyed(local_backend, key)

    info, put_peak, get_peak = round_trip_peaks(store, source, dest)

    assert info == BlobInfo(expected, size)
    assert os.path.getsize(store.blob_path(info.digest)) == HEADER + size + 50 * TAG
    with open(dest, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == expected
    # a few chunks of 1 MiB in flight (read, buffered, encrypted); never the 50 MB
    assert put_peak < 8 * MiB, f"encrypted put_file peaked at {put_peak} bytes"
    assert get_peak < 8 * MiB, f"decrypting get_file peaked at {get_peak} bytes"


def test_s3_large_blob_stays_in_bounded_memory(
    s3_backend: Backend, tmp_path: Path, key: EncryptionKey
) -> None:
    size = 64 * MiB
    source, dest = tmp_path / "large.bin", tmp_path / "large.copy"
    expected = write_large_file(source, size)
    store = keyed(s3_backend, key)
    store.read_bytes(store.put_bytes(b"warm-up").digest)  # the S3 client's one-time set-up

    info, put_peak, get_peak = round_trip_peaks(store, source, dest)

    assert info == BlobInfo(expected, size)
    with open(dest, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == expected
    # bounded by the client's buffers (upload parts of 5 MiB in these tests, 8 MiB read-ahead
    # blocks and the HTTP layer's), well under the blob's size
    assert put_peak < 32 * MiB, f"encrypted S3 put_file peaked at {put_peak} bytes"
    assert get_peak < 32 * MiB, f"decrypting S3 get_file peaked at {get_peak} bytes"


@pytest.mark.parametrize(
    "pieces",
    [
        [1, MiB - 1, MiB, 3, 2 * MiB + 5, 0, MiB],
        [MiB, MiB, MiB],
        [MiB, 0],
        [7] * 1000,
        [],
    ],
    ids=["irregular", "whole-chunks", "chunk-then-nothing", "many-small", "nothing"],
)
def test_encryptor_rechunks_any_write_pattern(key: EncryptionKey, pieces: list[int]) -> None:
    data = os.urandom(sum(pieces))
    out = io.BytesIO()
    encryptor = Encryptor(key, out)
    at = 0
    for n in pieces:
        encryptor.write(memoryview(data)[at : at + n])
        at += n
    encryptor.finish(sha(data))
    raw = out.getvalue()

    chunks = max(1, -(-len(data) // MiB))
    assert len(raw) == HEADER + len(data) + chunks * TAG
    header = parse_header(raw[:HEADER], "test blob")
    assert header is not None and header.key_id == key.key_id
    src = io.BytesIO(raw[HEADER:])
    plain = list(Decryptor(key, header, sha(data), "test blob").chunks(src))
    assert b"".join(plain) == data
    assert [len(p) for p in plain[:-1]] == [MiB] * (chunks - 1)


# -- wrong or missing keys -----------------------------------------------------------------------


def test_wrong_key_is_refused_naming_the_key_ids(backend: Backend, key: EncryptionKey) -> None:
    info = keyed(backend, key).put_bytes(b"weights" * 1000)
    other = EncryptionKey.generate()

    with pytest.raises(EncryptionKeyError) as excinfo:
        keyed(backend, other).read_bytes(info.digest)

    message = str(excinfo.value)
    assert f"key id {key.key_id}" in message and other.key_id in message
    assert "wrong key" in message and info.digest in message
    assert key.to_text() not in message and other.to_text() not in message
    assert excinfo.value.exit_code == 14


def test_encrypted_blob_without_any_key_is_refused(backend: Backend, key: EncryptionKey) -> None:
    info = keyed(backend, key).put_bytes(b"weights" * 1000)
    with pytest.raises(EncryptionKeyError, match="no encryption key is configured"):
        backend.open().read_bytes(info.digest)


def test_old_keys_are_picked_by_key_id(backend: Backend) -> None:
    first, second, third = (EncryptionKey.generate() for _ in range(3))
    a = keyed(backend, first).put_bytes(b"written under the first key")
    b = keyed(backend, second).put_bytes(b"written under the second key")

    reader = keyed(backend, third, second, first)  # writes with the third, reads all three
    assert reader.read_bytes(a.digest) == b"written under the first key"
    assert reader.read_bytes(b.digest) == b"written under the second key"
    c = reader.put_bytes(b"new")
    assert reader.key_id(c.digest) == third.key_id


# -- damage --------------------------------------------------------------------------------------

DATA_SIZE = 2 * MiB + MiB // 2  # three chunks: 1 MiB, 1 MiB, 0.5 MiB
LAST = HEADER + 2 * CT_CHUNK  # where the last chunk starts


def _flip(at: int) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        pos = at if at >= 0 else len(raw) + at
        return raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :]

    return damage


def _swap_chunks(raw: bytes) -> bytes:
    first, second = raw[HEADER : HEADER + CT_CHUNK], raw[HEADER + CT_CHUNK : LAST]
    return raw[:HEADER] + second + first + raw[LAST:]


DAMAGE = {
    "header-magic": (_flip(0), ArtifactCorrupted),  # then it reads as plaintext: wrong digest
    "header-version": (_flip(8), ArtifactCorrupted),
    "header-algorithm": (_flip(9), ArtifactCorrupted),
    "header-chunk-size": (_flip(10), ArtifactCorrupted),
    "header-reserved": (_flip(11), ArtifactCorrupted),
    "header-key-id": (_flip(15), EncryptionKeyError),  # names a key nobody holds
    "header-salt": (_flip(25), ArtifactCorrupted),
    "header-nonce-prefix": (_flip(HEADER - 1), ArtifactCorrupted),
    "first-chunk": (_flip(HEADER + 5), ArtifactCorrupted),
    "middle-chunk": (_flip(HEADER + CT_CHUNK + MiB // 2), ArtifactCorrupted),
    "first-chunk-tag": (_flip(HEADER + CT_CHUNK - 1), ArtifactCorrupted),
    "last-chunk": (_flip(LAST + 10), ArtifactCorrupted),
    "last-tag": (_flip(-1), ArtifactCorrupted),
    "truncated-at-chunk-boundary": (lambda raw: raw[:LAST], ArtifactCorrupted),
    "truncated-mid-chunk": (lambda raw: raw[: LAST + 1000], ArtifactCorrupted),
    "truncated-last-byte": (lambda raw: raw[:-1], ArtifactCorrupted),
    "truncated-to-header": (lambda raw: raw[:HEADER], ArtifactCorrupted),
    "truncated-inside-header": (lambda raw: raw[:20], ArtifactCorrupted),
    "emptied": (lambda raw: b"", ArtifactCorrupted),
    "extended-by-a-tag": (lambda raw: raw + raw[-TAG:], ArtifactCorrupted),
    "last-chunk-repeated": (lambda raw: raw + raw[LAST:], ArtifactCorrupted),
    "chunks-swapped": (_swap_chunks, ArtifactCorrupted),
    "chunk-dropped": (lambda raw: raw[:HEADER] + raw[HEADER + CT_CHUNK :], ArtifactCorrupted),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_blob_is_refused_and_nothing_is_written(
    backend: Backend, tmp_path: Path, key: EncryptionKey, case: str
) -> None:
    damage, error = DAMAGE[case]
    store = keyed(backend, key)
    data = os.urandom(DATA_SIZE)
    info = store.put_bytes(data)
    raw = backend.read_raw(rel(info.digest))
    assert len(raw) == HEADER + DATA_SIZE + 3 * TAG
    backend.write_raw(rel(info.digest), damage(raw))
    dest = tmp_path / "out" / "model.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"the previous version")

    with pytest.raises(error) as excinfo:
        store.read_bytes(info.digest)
    with pytest.raises(error):
        store.get_file(info.digest, dest)

    assert info.digest in str(excinfo.value)
    assert key.to_text() not in str(excinfo.value)
    assert dest.read_bytes() == b"the previous version"  # not replaced by anything partial
    assert os.listdir(dest.parent) == ["model.bin"]


def test_blob_moved_to_another_digest_is_refused(backend: Backend, key: EncryptionKey) -> None:
    store = keyed(backend, key)
    a = store.put_bytes(b"the model that was registered")
    b = store.put_bytes(b"another model")
    backend.write_raw(rel(a.digest), backend.read_raw(rel(b.digest)))

    with pytest.raises(ArtifactCorrupted, match="does not authenticate"):
        store.read_bytes(a.digest)
    assert store.read_bytes(b.digest) == b"another model"


def test_chunk_from_another_blob_under_the_same_key_is_refused(
    local_backend: Backend, key: EncryptionKey
) -> None:
    store = keyed(local_backend, key)
    a = store.put_bytes(os.urandom(DATA_SIZE))
    b = store.put_bytes(os.urandom(DATA_SIZE))
    raw_a, raw_b = local_backend.read_raw(rel(a.digest)), local_backend.read_raw(rel(b.digest))
    spliced = raw_a[: HEADER + CT_CHUNK] + raw_b[HEADER + CT_CHUNK :]
    local_backend.write_raw(rel(a.digest), spliced)

    with pytest.raises(ArtifactCorrupted, match="chunk 1 does not authenticate"):
        store.read_bytes(a.digest)


# -- plaintext blobs with a key configured -------------------------------------------------------


def test_plaintext_blob_is_read_with_a_key_configured(backend: Backend, key: EncryptionKey) -> None:
    old = backend.open().put_bytes(b"written before encryption was turned on")
    store = keyed(backend, key)

    assert store.key_id(old.digest) is None
    assert store.read_bytes(old.digest) == b"written before encryption was turned on"
    backend.write_raw(rel(old.digest), b"written before encryption was turned oN")
    with pytest.raises(ArtifactCorrupted):  # its digest is still verified
        store.read_bytes(old.digest)


def test_a_write_with_a_key_encrypts_a_blob_stored_in_plaintext(
    backend: Backend, tmp_path: Path, key: EncryptionKey
) -> None:
    data = b"logged before and after encryption was turned on" * 50
    source = tmp_path / "same.txt"
    source.write_bytes(data)
    info = backend.open().put_bytes(data)
    store = keyed(backend, key)

    assert store.put_file(source) == info
    assert store.key_id(info.digest) == key.key_id
    assert data[:40] not in backend.read_raw(rel(info.digest))
    before = backend.read_raw(rel(info.digest))
    store.put_bytes(data)  # already under the key: on S3 not uploaded again
    if backend.s3 is not None:
        assert backend.read_raw(rel(info.digest)) == before
    assert store.read_bytes(info.digest) == data


def test_plaintext_that_starts_like_an_encrypted_blob(
    backend: Backend, tmp_path: Path, key: EncryptionKey
) -> None:
    # e.g. an encrypted blob copied into a run as an artifact of its own, with encryption off
    lookalike = keyed(backend, key).put_bytes(b"x" * 5000)
    content = backend.read_raw(rel(lookalike.digest))
    info = backend.open().put_bytes(content)  # stored as plaintext

    for store in (backend.open(), keyed(backend, key), keyed(backend, EncryptionKey.generate())):
        assert store.read_bytes(info.digest) == content
        assert store.get_file(info.digest, tmp_path / "copy").read_bytes() == content
        assert b"".join(store.iter_blob(info.digest)) == content  # as the server streams it


# -- keys from settings --------------------------------------------------------------------------


def test_keyring_from_settings(tmp_path: Path, key: EncryptionKey) -> None:
    old1, old2 = EncryptionKey.generate(), EncryptionKey.generate()
    key_file = tmp_path / "old.key"
    key_file.write_text(old2.to_text() + "\n")
    settings = Settings(
        home=tmp_path,
        encryption_key=key.to_text(),
        encryption_old_keys=(old1.to_text(),),
        encryption_old_key_files=(str(key_file),),
    )

    keyring = Keyring.from_settings(settings)

    assert keyring.current == key
    assert [k.key_id for k in keyring.keys] == [key.key_id, old1.key_id, old2.key_id]
    for secret in (key.to_text(), old1.to_text()):
        assert secret not in repr(settings) and secret not in repr(keyring)


def test_settings_read_the_encryption_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: EncryptionKey
) -> None:
    files = [tmp_path / "a.key", tmp_path / "b.key"]
    monkeypatch.setenv("MODELLOOP_ENCRYPTION_KEY_FILE", str(tmp_path / "current.key"))
    monkeypatch.setenv("MODELLOOP_ENCRYPTION_OLD_KEYS", f" {key.to_text()} , ")
    monkeypatch.setenv("MODELLOOP_ENCRYPTION_OLD_KEY_FILES", os.pathsep.join(map(str, files)))
    monkeypatch.delenv("MODELLOOP_ENCRYPTION_KEY", raising=False)

    settings = Settings.from_env(home=tmp_path)

    assert settings.encryption_key is None
    assert settings.encryption_key_file == str(tmp_path / "current.key")
    assert settings.encryption_old_keys == (key.to_text(),)
    assert settings.encryption_old_key_files == tuple(map(str, files))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"encryption_key": "not base64 at all!"}, "MODELLOOP_ENCRYPTION_KEY is not a base64"),
        ({"encryption_key": "c2hvcnQ="}, "MODELLOOP_ENCRYPTION_KEY decodes to 5 bytes"),
        ({"encryption_old_keys": ("QUJD",)}, "MODELLOOP_ENCRYPTION_OLD_KEYS (item 1) decodes"),
        ({"encryption_key_file": "missing.key"}, "does not exist"),
        (
            {"encryption_key": "K", "encryption_key_file": "k.key"},
            "both MODELLOOP_ENCRYPTION_KEY and MODELLOOP_ENCRYPTION_KEY_FILE are set",
        ),
    ],
)
def test_bad_key_settings_are_refused_without_echoing_them(
    tmp_path: Path, fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        Keyring.from_settings(Settings(home=tmp_path, **fields))  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert problem in message
    assert "not base64 at all!" not in message and "c2hvcnQ=" not in message


def test_key_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "raw.key"
    binary.write_bytes(os.urandom(32) + b"\xff")
    with pytest.raises(InvalidInput, match="is not a base64 key file"):
        EncryptionKey.from_file(binary)


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    src = Path(__file__).resolve().parents[2] / "src"
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(src), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_cryptography_a_key_names_the_extra(home: Path, key: EncryptionKey) -> None:
    # cryptography made unimportable, as on an install without the extra
    result = _run_python(
        """
        import sys
        sys.modules["cryptography"] = None
        from modelloop import Client
        from modelloop.exceptions import InvalidInput
        try:
            Client()
        except InvalidInput as exc:
            print("refused:", exc)
        """,
        {"MODELLOOP_ENCRYPTION_KEY": key.to_text()},
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "pip install 'modelloop[crypto]'" in result.stdout
    assert key.to_text() not in result.stdout + result.stderr


def test_cryptography_is_not_imported_without_a_key(home: Path) -> None:
    result = _run_python(
        """
        import sys
        from modelloop import Client
        client = Client()
        digest = client.artifacts.put_bytes(b"plain").digest
        assert client.artifacts.read_bytes(digest) == b"plain"
        print("cryptography" in sys.modules)
        """,
        {},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
