"""A small FastAPI app made of the access router and routes guarded the way the server's are,
served by uvicorn in a subprocess for the HTTP tests of users, tokens, roles and audit.

``create_app`` is a uvicorn factory; it opens the store named by ``$MODELLOOP_TEST_ACCESS_STORE``.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures of
# create_app, whose names are imported inside it.
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from s3_support import free_port

STORE_ENV = "MODELLOOP_TEST_ACCESS_STORE"
SRC = Path(__file__).resolve().parents[2] / "src"


def create_app() -> Any:
    from fastapi import Body, Depends, FastAPI, Request

    from modelloop.access import Role
    from modelloop.server._access_routes import router
    from modelloop.server._auth import Principal, audit, check_model, require
    from modelloop.store._sql import SqlStore

    app = FastAPI(title="access test app")
    app.state.store = SqlStore(os.environ[STORE_ENV])
    app.state.notes = {}
    app.include_router(router, prefix="/api/v1")

    @app.get("/api/v1/ping")
    def ping(principal: Annotated[Principal, Depends(require(Role.VIEWER))]) -> dict[str, str]:
        return {"user": principal.name}

    @app.get("/api/v1/models/{name}/notes")
    def get_notes(
        name: str, principal: Annotated[Principal, Depends(require(Role.VIEWER))]
    ) -> dict[str, Any]:
        check_model(principal, name)
        return {"notes": app.state.notes.get(name)}

    @app.put("/api/v1/models/{name}/notes")
    def put_notes(
        request: Request,
        name: str,
        notes: Annotated[str, Body(embed=True)],
        principal: Annotated[Principal, Depends(require(Role.EDITOR))],
    ) -> dict[str, Any]:
        check_model(principal, name)
        before = app.state.notes.get(name)
        app.state.notes[name] = notes
        audit(
            request,
            principal,
            "model_notes.set",
            "registered_model",
            name,
            before=None if before is None else {"notes": before},
            after={"notes": notes},
        )
        return {"notes": notes}

    @app.put("/api/v1/models/{name}/aliases/{alias}")
    def put_alias(
        request: Request,
        name: str,
        alias: str,
        version: Annotated[int, Body(embed=True)],
        principal: Annotated[Principal, Depends(require(Role.DEPLOYER))],
    ) -> dict[str, Any]:
        check_model(principal, name)
        previous = app.state.store.set_alias(name, alias, version, actor=principal.name)
        return {"previous": previous}

    return app


@dataclass
class AppServer:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_app(store_url: str, folder: Path) -> AppServer:
    """uvicorn serving :func:`create_app` over ``store_url`` on a free loopback port."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"app-{port}.log"
    here = str(Path(__file__).resolve().parent)
    tests = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        STORE_ENV: store_url,
        "PYTHONPATH": os.pathsep.join([str(SRC), here, tests, os.environ.get("PYTHONPATH", "")]),
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "access_app_support:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = AppServer(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"app not up after 60 s:\n{server.log()}")
