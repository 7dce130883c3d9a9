"""Writers interrupted mid-blob: killed with SIGKILL, or fed a source that changes under them.

The source is a named pipe that the test feeds by hand, so the writer is provably in the middle of
its blob when it is killed: it is blocked reading data the test has not sent yet.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    from conftest import Backend

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")

MiB = 2**20
WAIT_S = 30  # generous bound for a stuck writer; the tests finish in well under a second

CHILD = """
import json, sys
from modelloop.artifacts import ArtifactStore
root, options, source = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
ArtifactStore(root, storage_options=options).put_file(source)
"""


def _open_pipe_writer(fifo: Path, reader_alive: Callable[[], bool]) -> int:
    """Open the write end of ``fifo`` once a reader has opened it; fail if the reader died."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        assert reader_alive(), "the writer under test exited before opening its source"
        assert time.monotonic() < deadline, "the writer under test never opened its source"
        time.sleep(0.005)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _payload(size: int) -> bytes:
    return b"".join(i.to_bytes(4, "big") + os.urandom(MiB - 4) for i in range(size // MiB))


def _start_child(backend: Backend, source: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            backend.root,
            json.dumps(backend.storage_options),
            str(source),
        ]
    )


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=WAIT_S) == -signal.SIGKILL, "the writer finished before the kill"


def test_sigkill_mid_local_write_leaves_no_partial_blob(
    local_backend: Backend, tmp_path: Path
) -> None:
    store = local_backend.open()
    earlier = store.put_bytes(b"stored before the crash")
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    tmp_dir = Path(store.root) / "tmp"

    def temp_bytes() -> int:
        return sum(p.stat().st_size for p in tmp_dir.iterdir())

    child = _start_child(local_backend, fifo)
    try:
        fd = _open_pipe_writer(fifo, lambda: child.poll() is None)
        try:
            sent = 0
            while temp_bytes() < 4 * MiB:  # the child has written 4 MiB of its blob, then dies
                assert sent < 256 * MiB, "the child does not write what it reads"
                sent += os.write(fd, os.urandom(MiB))
                assert child.poll() is None
            _kill(child)
        finally:
            os.close(fd)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    # The partial write is in tmp/, never under blobs/; the store still reads cleanly.
    assert [p.name.endswith(".part") for p in tmp_dir.iterdir()] == [True]
    assert local_backend.complete_blobs() == {
        f"blobs/{earlier.digest[:2]}/{earlier.digest}": b"stored before the crash"
    }
    reopened = local_backend.open()
    assert reopened.read_bytes(earlier.digest) == b"stored before the crash"
    after = reopened.put_bytes(b"stored after the crash")
    assert reopened.read_bytes(after.digest) == b"stored after the crash"

    # The leftover is what cleanup_temp is for.
    leftover = next(tmp_dir.iterdir())
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    assert reopened.cleanup_temp() == 1
    assert list(tmp_dir.iterdir()) == []


def _source_switching_pipes(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``source`` is a symlink to a first pipe; the test repoints it to a second pipe once the
    writer has opened the first, so each of the writer's two reads of the source is its own
    pipe and the test knows which read it is feeding."""
    first, second, source = tmp_path / "first.fifo", tmp_path / "second.fifo", tmp_path / "src"
    os.mkfifo(first)
    os.mkfifo(second)
    source.symlink_to(first)
    return first, second, source


def _repoint(source: Path, target: Path) -> None:
    tmp = source.with_name("src.new")
    tmp.symlink_to(target)
    os.replace(tmp, source)


def _feed(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def test_sigkill_mid_s3_upload_leaves_no_object(s3_backend: Backend, tmp_path: Path) -> None:
    store = s3_backend.open()
    earlier = store.put_bytes(b"stored before the crash")
    first, second, source = _source_switching_pipes(tmp_path)
    data = _payload(8 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    child = _start_child(s3_backend, source)

    def alive() -> bool:
        return child.poll() is None

    try:
        fd = _open_pipe_writer(first, alive)
        _repoint(source, second)
        _feed(fd, data)  # the first read: hashing
        os.close(fd)
        fd = _open_pipe_writer(second, alive)  # the second read: the upload
        try:
            _feed(fd, data[: 6 * MiB])  # one 5 MiB part goes up; the rest never comes
            _wait_for(lambda: sum(s3_backend.pending_uploads().values()) >= 1, "a part")
            _kill(child)
        finally:
            os.close(fd)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert not store.exists(digest)
    assert s3_backend.complete_blobs() == {
        f"blobs/{earlier.digest[:2]}/{earlier.digest}": b"stored before the crash"
    }
    assert s3_backend.open().read_bytes(earlier.digest) == b"stored before the crash"


def test_source_changed_during_s3_upload_stores_nothing(
    s3_backend: Backend, tmp_path: Path
) -> None:
    store = s3_backend.open()
    first, second, source = _source_switching_pipes(tmp_path)
    hashed, uploaded = _payload(6 * MiB), _payload(6 * MiB)

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(store.put_file, source)

        def alive() -> bool:
            return not result.done()

        fd = _open_pipe_writer(first, alive)
        _repoint(source, second)
        _feed(fd, hashed)
        os.close(fd)
        fd = _open_pipe_writer(second, alive)
        _feed(fd, uploaded)
        os.close(fd)
        with pytest.raises(InvalidInput, match="changed while it was being stored"):
            result.result(timeout=WAIT_S)

    assert s3_backend.complete_blobs() == {}
    assert s3_backend.pending_uploads() == {}  # the upload was aborted, not left behind
