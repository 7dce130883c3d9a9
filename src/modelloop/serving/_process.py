"""``modelloop serve`` as a child process on a free loopback port: started, waited for until
its V2 readiness route answers, and stopped (SIGTERM, then SIGKILL) on exit. The demo and the
built-in load test of ``modelloop ops plan --measure`` run their replica this way."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelloop.exceptions import ServiceUnavailable

__all__ = ["ServeProcess", "free_port", "serve_process"]


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    """A running ``modelloop serve``: its process, base URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    what: str = "the server"

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Return once ``/v2/health/ready`` answers 200; ``ServiceUnavailable`` (with the end
        of the log) when the process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise ServiceUnavailable(f"{self.what} exited at start:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"{self.what} was not ready in {timeout:.0f} s (log: {self.log_path})"
                )
            time.sleep(0.1)


@contextlib.contextmanager
def serve_process(
    models: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    what: str = "the server",
) -> Iterator[ServeProcess]:
    """``modelloop serve MODELS... --port PORT EXTRA...`` on a free loopback port with ``env``
    (default: this process's), its output in ``log_path``; started (call ``wait_ready``) and
    stopped on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "modelloop", "serve", *models, "--port", str(port), *extra]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=dict(os.environ if env is None else env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield ServeProcess(proc, f"http://127.0.0.1:{port}", log_path, what)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
