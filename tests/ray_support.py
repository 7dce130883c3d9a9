"""A real local Ray head for the tests that run work on Ray (batch scoring, tuning)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_support import free_port

SRC = Path(__file__).resolve().parents[1] / "src"


@contextlib.contextmanager
def ray_head(temp: Path) -> Iterator[str]:
    """``ray start --head --block`` in its own session on a free 127.0.0.1 port with two CPUs,
    this checkout's source first on its path and its log in ``temp``; yields its address.
    On exit its whole process group (workers included) is stopped — never ``ray stop``, which
    would stop every Ray on the machine."""
    # Ray's sockets live under its temp dir and a socket path may not pass 107 bytes: a
    # pytest tmp_path under an xdist worker is too deep, so Ray gets a short folder of its own
    ray_temp = Path(tempfile.mkdtemp(prefix="mlray-"))
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    log = open(temp / "head.log", "wb")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={ray_temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}: see {temp / 'head.log'}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the Ray head did not start within 120 s")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader for a moment: make sure none of it is left
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(ray_temp, ignore_errors=True)
