"""Forks one modelloop server per test, cheaply: run as a script by ``server_support.Launcher``.

It imports the server's whole stack once, then reads JSON commands on stdin, one per line:

* ``{"op": "start", "store_url": ..., "artifact_root": ..., "home": ...}``: binds a listening
  socket on a free loopback port, forks, and the child serves ``create_app`` over that store with
  uvicorn (the socket is listening before the fork, so requests wait in its backlog until the
  child accepts them: no readiness polling). Answers ``{"pid": ..., "port": ...}``.
* ``{"op": "stop", "pid": ...}``: SIGTERM to that child, then reaps it. Answers ``{"status": ...}``.

It forks before any thread exists (it never opens a store itself), and on end of input it stops
every child it started. Nothing here is reachable from a production server: production runs
``modelloop server`` on one store; this script only calls the same ``create_app``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import fastapi  # noqa: F401 - imported once here, inherited by every forked server
import sqlalchemy  # noqa: F401
import uvicorn

from modelloop._config import Settings
from modelloop.artifacts import ArtifactStore
from modelloop.server._app import create_app
from modelloop.store._sql import SqlStore

with contextlib.suppress(ImportError):  # without it, PostgreSQL tests skip themselves
    import psycopg  # noqa: F401


def _serve(sock: socket.socket, cmd: dict[str, object]) -> None:
    settings = Settings(home=str(cmd["home"]), store_url=str(cmd["store_url"]))
    store = SqlStore(str(cmd["store_url"]))
    app = create_app(
        store,
        ArtifactStore(str(cmd["artifact_root"])),
        settings,
        max_upload_bytes=int(cmd.get("max_upload_bytes") or 64 << 20),  # type: ignore[call-overload]
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    store.close()


def _warm() -> None:
    """Build one app over a throwaway store and drop it. The first ``create_app`` of a process
    builds FastAPI's and pydantic's validators for every route (0.4 s, against 0.03 s for the
    next ones); every forked server inherits them built. It starts no thread."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp, 'warm.db')}"
        store = SqlStore(url)
        try:
            create_app(
                store, ArtifactStore(str(Path(tmp, "artifacts"))), Settings(home=tmp, store_url=url)
            )
        finally:
            store.close()
    assert threading.active_count() == 1, "warming the app started a thread: forking is unsafe"


def main() -> None:
    _warm()
    children: set[int] = set()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "start":
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    sys.stdin.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    _serve(sock, cmd)
                except BaseException as exc:  # shown in the test's captured stderr
                    print(f"forked server failed: {exc!r}", file=sys.stderr, flush=True)
                    code = 1
                finally:
                    os._exit(code)
            port = sock.getsockname()[1]
            sock.close()
            children.add(pid)
            print(json.dumps({"pid": pid, "port": port}), flush=True)
        elif cmd["op"] == "stop":
            pid = int(cmd["pid"])
            status = None
            if pid in children:
                os.kill(pid, signal.SIGTERM)
                _, status = os.waitpid(pid, 0)
                children.discard(pid)
            print(json.dumps({"status": status}), flush=True)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
