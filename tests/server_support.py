"""Real modelloop server processes for tests.

:class:`Launcher` forks one server per test from a process that imported everything once (see
``server_launcher.py``): a fresh database per test costs a fork and a migration, not an
interpreter start. :func:`start_cli_server` runs ``python -m modelloop server`` itself, for the
tests about the command (TLS, binds, limits) and the end-to-end ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from s3_support import free_port

_LAUNCHER = Path(__file__).with_name("server_launcher.py")


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int


class Launcher:
    """A launcher process; :meth:`start` and :meth:`stop` one forked server per test."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(_LAUNCHER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, cmd: Mapping[str, object]) -> dict[str, object]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            pytest.fail(f"the server launcher exited with {self._proc.wait()}")
        answer: dict[str, object] = json.loads(line)
        return answer

    def start(
        self, store_url: str, artifact_root: Path, home: Path, max_upload_bytes: int | None = None
    ) -> RunningServer:
        got = self._ask(
            {
                "op": "start",
                "store_url": store_url,
                "artifact_root": str(artifact_root),
                "home": str(home),
                "max_upload_bytes": max_upload_bytes,
            }
        )
        return RunningServer(f"http://127.0.0.1:{got['port']}", int(got["pid"]))  # type: ignore[call-overload]

    def stop(self, server: RunningServer) -> None:
        self._ask({"op": "stop", "pid": server.pid})

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def wait_for_http(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 60,
    *,
    need_ok: bool = False,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Wait until ``url`` answers (any status; with ``need_ok``, 200), failing if ``proc``
    exits first."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2, context=ctx):
                return
        except urllib.error.HTTPError:
            if not need_ok:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
            pytest.fail(f"the server exited with {proc.returncode}: {err[-2000:]!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not answer at {url} within {timeout} s")
        time.sleep(0.1)


@contextmanager
def start_cli_server(
    env: Mapping[str, str],
    *args: str,
    scheme: str = "http",
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m modelloop server --port <free> *args`` with ``env``; yields (url, process).
    ``preexec_fn`` runs in the child before the server starts (e.g. to set a resource limit)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "server", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", proc)  # type: ignore[arg-type]
        yield url, proc  # type: ignore[misc]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
