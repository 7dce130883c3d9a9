"""The artifact store suite: every test named ``*_backend`` runs on the local disk and on S3."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from artifact_support import round_trip_peaks, write_large_file

import modelloop.artifacts
from modelloop.artifacts import ArtifactStore, BlobInfo
from modelloop.exceptions import ArtifactCorrupted, InvalidInput, NotFound

if TYPE_CHECKING:
    from conftest import Backend, S3Server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_exported_names() -> None:
    assert modelloop.artifacts.__all__ == [
        "ArtifactStore",
        "BlobInfo",
        "EncryptionKey",
        "KeyStatus",
        "Keyring",
        "RotationReport",
        "key_status",
        "rotate_keys",
        "validate_artifact_path",
    ]


# -- round trips ---------------------------------------------------------------------------------


def test_put_bytes_round_trip(backend: Backend) -> None:
    store = backend.open()
    data = b"model weights \x00\xff" * 1000
    info = store.put_bytes(data)

    assert info == BlobInfo(sha(data), len(data))
    assert store.exists(info.digest)
    assert store.read_bytes(info.digest) == data
    assert store.blob_path(info.digest) == f"{store.root}/blobs/{info.digest[:2]}/{info.digest}"
    assert backend.complete_blobs() == {f"blobs/{info.digest[:2]}/{info.digest}": data}


def test_put_file_and_get_file_round_trip(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    source = tmp_path / "model.skops"
    source.write_bytes(os.urandom(300_000))

    info = store.put_file(source)
    dest = tmp_path / "download" / "nested" / "model.skops"
    returned = store.get_file(info.digest, dest)

    assert info == BlobInfo(sha(source.read_bytes()), 300_000)
    assert returned == dest
    assert dest.read_bytes() == source.read_bytes()
    assert os.listdir(dest.parent) == ["model.skops"]  # no temporary file left beside it


def test_empty_blob_round_trip(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    info = store.put_bytes(b"")
    assert info == BlobInfo(sha(b""), 0)
    assert store.read_bytes(info.digest) == b""
    assert store.get_file(info.digest, tmp_path / "empty").read_bytes() == b""


def test_same_content_is_stored_once(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    data = b"same content"
    source = tmp_path / "same.bin"
    source.write_bytes(data)

    infos = {store.put_bytes(data), store.put_bytes(data), store.put_file(source)}
    infos.add(backend.open().put_file(source))  # a second store on the same root

    assert infos == {BlobInfo(sha(data), len(data))}
    assert list(backend.complete_blobs().values()) == [data]


def test_distinct_contents_are_distinct_blobs(backend: Backend) -> None:
    store = backend.open()
    contents = [b"a", b"b", b"c" * 5000]
    infos = [store.put_bytes(c) for c in contents]
    assert [store.read_bytes(i.digest) for i in infos] == contents
    assert sorted(backend.complete_blobs().values()) == sorted(contents)


def test_large_file_round_trip(backend: Backend, tmp_path: Path) -> None:
    size = 20 * 2**20  # on S3: a multipart upload of four parts
    source, dest = tmp_path / "large.bin", tmp_path / "large.copy"
    expected = write_large_file(source, size)
    store = backend.open()

    info = store.put_file(source)
    store.get_file(info.digest, dest)

    assert info == BlobInfo(expected, size)
    assert sha(dest.read_bytes()) == expected
    assert list(backend.complete_blobs()) == [f"blobs/{expected[:2]}/{expected}"]


def test_local_files_stream_in_bounded_memory(local_backend: Backend, tmp_path: Path) -> None:
    # Locally the only buffer is one 1 MiB chunk. (On S3 the client buffers a part on upload and
    # a read-ahead block on download: bounded by those sizes, whatever the file's size.)
    size = 20 * 2**20
    source, dest = tmp_path / "large.bin", tmp_path / "large.copy"
    expected = write_large_file(source, size)
    store = local_backend.open()

    _, put_peak, get_peak = round_trip_peaks(store, source, dest)

    assert sha(dest.read_bytes()) == expected
    assert put_peak < 4 * 2**20, f"put_file peaked at {put_peak} bytes"
    assert get_peak < 4 * 2**20, f"get_file peaked at {get_peak} bytes"


# -- digest verification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"X" + data[1:], id="byte-changed"),
        pytest.param(lambda data: data[:-1], id="truncated"),
        pytest.param(lambda data: b"", id="emptied"),
    ],
)
def test_corrupted_blob_fails_loudly(backend: Backend, tmp_path: Path, damage) -> None:
    store = backend.open()
    data = b"the real content " * 100
    info = store.put_bytes(data)
    rel = f"blobs/{info.digest[:2]}/{info.digest}"
    backend.write_raw(rel, damage(data))

    with pytest.raises(ArtifactCorrupted) as excinfo:
        store.read_bytes(info.digest)
    assert info.digest in str(excinfo.value)
    assert store.blob_path(info.digest) in str(excinfo.value)

    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    with pytest.raises(ArtifactCorrupted, match=info.digest):
        store.get_file(info.digest, dest_dir / "fresh.bin")
    assert os.listdir(dest_dir) == []  # neither the file nor its temporary

    existing = dest_dir / "existing.bin"
    existing.write_bytes(b"previous download")
    with pytest.raises(ArtifactCorrupted):
        store.get_file(info.digest, existing)
    assert existing.read_bytes() == b"previous download"
    assert os.listdir(dest_dir) == ["existing.bin"]


def test_putting_again_repairs_a_damaged_local_blob(local_backend: Backend) -> None:
    store = local_backend.open()
    info = store.put_bytes(b"precious")
    local_backend.write_raw(f"blobs/{info.digest[:2]}/{info.digest}", b"garbage!")
    store.put_bytes(b"precious")
    assert store.read_bytes(info.digest) == b"precious"


# -- missing blobs and bad arguments ---------------------------------------------------------


def test_missing_blob_is_not_found(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    digest = sha(b"never stored")

    assert not store.exists(digest)
    with pytest.raises(NotFound, match=digest):
        store.read_bytes(digest)
    with pytest.raises(NotFound, match=digest):
        store.get_file(digest, tmp_path / "dl" / "x.bin")
    assert not (tmp_path / "dl").exists()


BAD_DIGESTS = [
    "",
    "abc",
    sha(b"x").upper(),
    sha(b"x") + "0",
    sha(b"x")[:-1],
    "g" * 64,
    "../" + sha(b"x")[3:],
    sha(b"x")[:32] + "/" + sha(b"x")[33:],
    None,
    123,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_malformed_digest_is_invalid_input(local_backend: Backend, tmp_path: Path, digest) -> None:
    store = local_backend.open()
    for call in (
        store.exists,
        store.read_bytes,
        store.blob_path,
        lambda d: store.get_file(d, tmp_path / "dest"),
    ):
        with pytest.raises(InvalidInput, match="digest"):
            call(digest)
    assert not (tmp_path / "dest").exists()


def test_malformed_digest_is_invalid_input_on_s3(s3_backend: Backend) -> None:
    with pytest.raises(InvalidInput, match="digest"):
        s3_backend.open().exists("../../etc")


def test_put_file_argument_errors(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    with pytest.raises(NotFound, match=r"missing\.bin"):
        store.put_file(tmp_path / "missing.bin")
    with pytest.raises(InvalidInput, match="directory"):
        store.put_file(tmp_path)
    with pytest.raises(InvalidInput, match="bytes"):
        store.put_bytes("text is not bytes")  # type: ignore[arg-type]
    assert backend.complete_blobs() == {}


def test_get_file_onto_a_directory_is_invalid(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    info = store.put_bytes(b"x")
    with pytest.raises(InvalidInput, match="directory"):
        store.get_file(info.digest, tmp_path)


# -- roots ---------------------------------------------------------------------------------


def test_local_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ArtifactStore("rel/dir").root == str(tmp_path / "rel" / "dir")
    assert ArtifactStore(f"file://{tmp_path}/u").root == str(tmp_path / "u")
    a = ArtifactStore(f"file://{tmp_path}/same").put_bytes(b"via url")
    assert ArtifactStore(str(tmp_path / "same")).read_bytes(a.digest) == b"via url"


def test_s3_root_is_normalised(s3_backend: Backend) -> None:
    store = ArtifactStore(s3_backend.root + "/", storage_options=s3_backend.storage_options)
    assert store.root == s3_backend.root
    assert repr(store) == f"ArtifactStore({s3_backend.root!r})"


@pytest.mark.parametrize("root", ["", "   ", "http://example.com/x", "ftp://h/x", "s3://"])
def test_unusable_root_is_invalid_input(root: str) -> None:
    with pytest.raises(InvalidInput, match="artifact root"):
        ArtifactStore(root)


def test_missing_bucket_is_not_found(s3_server: S3Server) -> None:
    store = ArtifactStore("s3://no-such-bucket/p", storage_options=s3_server.storage_options())
    with pytest.raises(NotFound, match="no-such-bucket"):
        store.put_bytes(b"x")


# -- temporary files -------------------------------------------------------------------------


def test_cleanup_temp_removes_only_stale_files(local_backend: Backend) -> None:
    store = local_backend.open()
    info = store.put_bytes(b"kept")
    tmp_dir = Path(store.root) / "tmp"
    stale, fresh = tmp_dir / "stale.part", tmp_dir / "fresh.part"
    stale.write_bytes(b"left by a crashed writer")
    fresh.write_bytes(b"a writer still at work")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    assert store.cleanup_temp() == 1
    assert sorted(os.listdir(tmp_dir)) == ["fresh.part"]
    assert store.cleanup_temp(older_than_s=3600) == 0
    assert store.read_bytes(info.digest) == b"kept"
    with pytest.raises(InvalidInput):
        store.cleanup_temp(older_than_s=-1)


def test_cleanup_temp_on_s3_has_nothing_to_do(s3_backend: Backend) -> None:
    store = s3_backend.open()
    store.put_bytes(b"x")
    assert store.cleanup_temp(older_than_s=0) == 0
    assert len(s3_backend.complete_blobs()) == 1
