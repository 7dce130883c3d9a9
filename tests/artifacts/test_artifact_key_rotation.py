"""Key rotation and status: the library on both backends, and ``modelloop keys`` as a real process,
killed mid-rotation and run again."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelloop.artifacts import (
    ArtifactStore,
    EncryptionKey,
    Keyring,
    KeyStatus,
    key_status,
    rotate_keys,
)
from modelloop.exceptions import EncryptionKeyError
from s3_support import BUCKET

if TYPE_CHECKING:
    from conftest import Backend
    from s3_support import S3Server

MiB = 2**20


def keyed(backend: Backend, current: EncryptionKey | None, *others: EncryptionKey) -> ArtifactStore:
    return ArtifactStore(
        backend.root, storage_options=backend.storage_options, keyring=Keyring(current, others)
    )


def rel(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


# -- the library ---------------------------------------------------------------------------------


def test_rotation_moves_every_blob_to_the_new_key(backend: Backend) -> None:
    old, new = EncryptionKey.generate(), EncryptionKey.generate()
    contents = {
        backend.open().put_bytes(b"plaintext from before encryption").digest: (
            b"plaintext from before encryption"
        )
    }
    for data in (b"", b"small", os.urandom(2 * MiB + 5)):
        contents[keyed(backend, old).put_bytes(data).digest] = data
    store = keyed(backend, old)
    assert key_status(store) == KeyStatus(blobs=4, plaintext=1, by_key={old.key_id: 3})

    seen: list[tuple[str, str]] = []
    report = rotate_keys(store, new, on_blob=lambda d, outcome: seen.append((d, outcome)))

    assert (report.key_id, report.rotated, report.skipped, report.failed) == (new.key_id, 4, 0, ())
    assert sorted(seen) == sorted((d, "rotated") for d in contents)
    assert key_status(store) == KeyStatus(blobs=4, plaintext=0, by_key={new.key_id: 4})
    only_new = keyed(backend, new)
    for digest, data in contents.items():
        assert only_new.read_bytes(digest) == data
    with pytest.raises(EncryptionKeyError, match=new.key_id):
        keyed(backend, old).read_bytes(next(iter(contents)))

    again = rotate_keys(store.with_keyring(Keyring(new)), new)
    assert (again.rotated, again.skipped, again.failed) == (0, 4, ())


def test_blobs_that_cannot_be_read_are_reported_and_left_alone(backend: Backend) -> None:
    old, new, stranger = (EncryptionKey.generate() for _ in range(3))
    good = keyed(backend, old).put_bytes(b"good").digest
    foreign = keyed(backend, stranger).put_bytes(b"under a key nobody gave us").digest
    damaged = keyed(backend, old).put_bytes(b"will be damaged").digest
    raw = backend.read_raw(rel(damaged))
    backend.write_raw(rel(damaged), raw[:-1] + bytes([raw[-1] ^ 1]))
    before = {d: backend.read_raw(rel(d)) for d in (foreign, damaged)}

    report = rotate_keys(keyed(backend, old), new)

    assert (report.rotated, report.skipped) == (1, 0)
    assert {(f.digest, f.error) for f in report.failed} == {
        (foreign, "EncryptionKeyError"),
        (damaged, "ArtifactCorrupted"),
    }
    assert {d: backend.read_raw(rel(d)) for d in (foreign, damaged)} == before
    assert keyed(backend, new).read_bytes(good) == b"good"


def test_rotation_to_a_key_from_plaintext_turns_encryption_on(local_backend: Backend) -> None:
    plain = local_backend.open()
    digests = [plain.put_bytes(f"artifact {i}".encode() * 100).digest for i in range(5)]
    key = EncryptionKey.generate()

    report = rotate_keys(plain, key)

    assert report.rotated == 5
    for i, digest in enumerate(digests):
        assert f"artifact {i}".encode() not in local_backend.read_raw(rel(digest))
        assert keyed(local_backend, key).read_bytes(digest) == f"artifact {i}".encode() * 100


def test_status_counts_damaged_headers_and_skips_stray_files(local_backend: Backend) -> None:
    key = EncryptionKey.generate()
    store = keyed(local_backend, key)
    digest = store.put_bytes(b"x" * 100).digest
    other = store.put_bytes(b"y" * 100).digest
    raw = local_backend.read_raw(rel(other))
    local_backend.write_raw(rel(other), raw[:8] + b"\x07" + raw[9:])  # format version 7
    (Path(local_backend.root) / "blobs" / "ab").mkdir(exist_ok=True)
    local_backend.write_raw("blobs/ab/not-a-digest", b"stray")

    assert key_status(store) == KeyStatus(
        blobs=2, plaintext=0, by_key={key.key_id: 1}, damaged=(other,)
    )
    assert list(store.digests()) == sorted([digest, other])


# -- the command, as a real process --------------------------------------------------------------


def modelloop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command; stderr comes back with Rich's line wrapping undone."""
    result = subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    result.stderr = " ".join(result.stderr.split())
    return result


def test_generate_writes_a_private_key_file_once(tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    made = modelloop("keys", "generate", "--out", str(path), "--json", env={})
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EncryptionKey.from_file(path).key_id == shown["key_id"]
    assert shown["file"] == str(path) and "key" not in shown  # the key itself stays in the file

    again = modelloop("keys", "generate", "--out", str(path), env={})
    assert again.returncode == 4 and "never overwritten" in again.stderr
    assert EncryptionKey.from_file(path).key_id == shown["key_id"]

    printed = modelloop("keys", "generate", env={})
    assert printed.returncode == 0
    key = EncryptionKey.from_text(printed.stdout, "stdout")
    assert key.key_id in printed.stderr and key.key_id != shown["key_id"]


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    files = []
    for name in ("old.key", "new.key"):
        path = tmp_path / name
        path.write_text(EncryptionKey.generate().to_text() + "\n")
        files.append(path)
    return files[0], files[1]


@pytest.fixture(params=["local", "s3"])
def rotation_env(request: pytest.FixtureRequest, home: Path, key_files: tuple[Path, Path]) -> dict:
    """Settings for a ``modelloop`` process whose current key is the old one, on each backend."""
    env = {"MODELLOOP_HOME": str(home), "MODELLOOP_ENCRYPTION_KEY_FILE": str(key_files[0])}
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        env["MODELLOOP_ARTIFACT_ROOT"] = f"s3://{BUCKET}/{uuid.uuid4().hex}"
        env["AWS_ENDPOINT_URL"] = s3.endpoint_url
    return env


def store_for(env: dict[str, str], home: Path, *keys: EncryptionKey) -> ArtifactStore:
    root = env.get("MODELLOOP_ARTIFACT_ROOT", str(home / "artifacts"))
    options = {"client_kwargs": {"endpoint_url": env["AWS_ENDPOINT_URL"]}} if "s3" in root else {}
    return ArtifactStore(root, storage_options=options, keyring=Keyring(keys[0], keys[1:]))


def test_interrupted_rotation_leaves_every_blob_readable_and_a_rerun_finishes(
    rotation_env: dict[str, str], home: Path, key_files: tuple[Path, Path]
) -> None:
    old, new = (EncryptionKey.from_file(p) for p in key_files)
    writer = store_for(rotation_env, home, old)
    contents = {}
    for i in range(8):  # 4 MiB each: the kill lands inside a blob, after 3 MiB were handed over
        data = i.to_bytes(1, "big") * (4 * MiB)
        contents[writer.put_bytes(data).digest] = data
    killed = modelloop(
        "keys",
        "rotate",
        "--new-key-file",
        str(key_files[1]),
        "--json",
        env={**rotation_env, "MODELLOOP_KEYS_FAULT": "after:3"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""  # it died before its summary

    both = store_for(rotation_env, home, new, old)
    status = key_status(both)
    assert status == KeyStatus(blobs=8, plaintext=0, by_key={new.key_id: 3, old.key_id: 5})
    for digest, data in contents.items():
        assert both.read_bytes(digest) == data
        holder = new if both.key_id(digest) == new.key_id else old
        assert store_for(rotation_env, home, holder).read_bytes(digest) == data
    if "MODELLOOP_ARTIFACT_ROOT" not in rotation_env:  # the blob it was writing: a temp file
        (partial,) = (home / "artifacts" / "tmp").iterdir()
        assert partial.stat().st_size > MiB

    finished = modelloop(
        "keys", "rotate", "--new-key-file", str(key_files[1]), "--json", env=rotation_env
    )
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    assert summary == {
        "key_id": new.key_id,
        "rotated": 5,
        "skipped": 3,
        "failed": 0,
        "failures": [],
    }
    only_new = store_for(rotation_env, home, new)
    assert key_status(only_new) == KeyStatus(blobs=8, plaintext=0, by_key={new.key_id: 8})
    for digest, data in contents.items():
        assert only_new.read_bytes(digest) == data

    shown = modelloop("keys", "status", "--json", env=rotation_env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "blobs": 8,
        "plaintext": 0,
        "by_key": {new.key_id: 8},
        "damaged": [],
        "current_key_id": old.key_id,
        "readable_key_ids": [old.key_id],
    }


def test_rotate_reports_failures_and_exits_1(
    home: Path, key_files: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {"MODELLOOP_HOME": str(home)}  # no key configured: blobs are read as plaintext
    plain = store_for(env, home, None)  # type: ignore[arg-type]
    good = plain.put_bytes(b"plain").digest
    foreign = store_for(env, home, EncryptionKey.generate()).put_bytes(b"foreign").digest

    result = modelloop("keys", "rotate", "--new-key-file", str(key_files[1]), "--json", env=env)

    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert (summary["rotated"], summary["skipped"], summary["failed"]) == (1, 0, 1)
    assert summary["failures"][0]["digest"] == foreign
    assert "not among the configured keys" in summary["failures"][0]["message"]
    new = EncryptionKey.from_file(key_files[1])
    assert store_for(env, home, new).read_bytes(good) == b"plain"

    table = modelloop("keys", "status", env=env)
    assert table.returncode == 0, table.stderr
    assert "NOT HELD" in table.stdout and "written in plaintext" in table.stdout


def test_rotate_refuses_a_bad_key_file_or_fault_setting(home: Path, tmp_path: Path) -> None:
    env = {"MODELLOOP_HOME": str(home)}
    missing = modelloop("keys", "rotate", "--new-key-file", str(tmp_path / "nope.key"), env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.key"
    bad.write_text("c2hvcnQ=\n")
    short = modelloop("keys", "rotate", "--new-key-file", str(bad), env=env)
    assert short.returncode == 2 and "decodes to 5 bytes" in short.stderr
    good = tmp_path / "good.key"
    good.write_text(EncryptionKey.generate().to_text())
    fault = modelloop(
        "keys", "rotate", "--new-key-file", str(good), env={**env, "MODELLOOP_KEYS_FAULT": "soon"}
    )
    assert fault.returncode == 2 and "MODELLOOP_KEYS_FAULT must be after:N" in fault.stderr
