"""Bearer-token auth of a real ``modelloop serve`` process. The routes are enumerated from the
app itself, so a route added later cannot slip through without a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import Server, register_rf, row_records, start_server, wait_until_ready

from s3_support import free_port

ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"
MODEL = "cancer"
PATH_VALUES = {"name": MODEL, "version": "1"}
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("auth") / "home"
    register_rf(home)
    return home


@pytest.fixture(scope="module")
def servers(home: Path) -> Iterator[tuple[Server, Server]]:
    """Both on all interfaces, started together: one with an admin token (--token) and a
    predict token (environment), one with --allow-unauthenticated."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    started: list[Server] = []
    try:
        token_args = ["--host", "0.0.0.0", "--token", ADMIN, "--no-log"]
        open_args = ["--host", "0.0.0.0", "--allow-unauthenticated", "--no-log"]
        for args, tokens in ((token_args, f"{PREDICT}:predict"), (open_args, "")):
            env = {"MODELLOOP_SERVE_TOKENS": tokens}
            started.append(
                start_server(home, [f"{MODEL}@champion"], *args, env=env, wait_ready=False)
            )
        wait_until_ready(started[0], 60, headers=admin)
        wait_until_ready(started[1], 60)
        yield started[0], started[1]
    finally:
        for srv in started:
            srv.terminate()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[Any]:
    import httpx

    # A fresh connection per request: one failing route cannot break the next one's connection.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
        yield client


def app_routes(home: Path) -> list[tuple[str, str]]:
    """(method, concrete path) of every HTTP route the app has, path parameters filled in."""
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from modelloop._config import Settings
    from modelloop.serving import ServeConfig, create_app
    from modelloop.serving._auth import Token

    app = create_app(
        [f"{MODEL}@champion"],
        config=ServeConfig(tokens=(Token(ADMIN),)),
        settings=Settings(home=home),
    )
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):  # the docs' files
            assert route.app.directory is not None
            files = sorted(p.name for p in Path(route.app.directory).iterdir() if p.is_file())
            found.extend(("GET", f"{route.path}/{name}") for name in files)
            continue
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        assert methods and path, f"route {route!r} is not a plain HTTP route: check it by hand"
        params = [m.group(1) for m in _PARAM.finditer(path)]
        unknown = [p for p in params if p not in PATH_VALUES]
        assert not unknown, f"{path}: no test value for path parameters {unknown}"
        concrete = _PARAM.sub(lambda m: PATH_VALUES[m.group(1)], path)
        found.extend((method, concrete) for method in sorted(methods))
    return found


@pytest.fixture(scope="module")
def routes(home: Path) -> list[tuple[str, str]]:
    found = app_routes(home)
    paths = {p for _, p in found}
    # The enumeration sees the routes we know of (and whatever is added later).
    assert {
        "/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/infer",
        f"/v2/models/{MODEL}/versions/1/infer", f"/v1/models/{MODEL}/predict",
        f"/v1/models/{MODEL}/feedback", "/v1/admin/routing", "/metrics", "/openapi.json", "/docs",
        "/docs/assets/swagger-ui-bundle.js",
    } <= paths  # fmt: skip
    return found


def call(http: Any, method: str, path: str, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    if body is not None:
        headers["Content-Type"] = "application/json"
    return http.request(method, path, content=body, headers=headers)


def assert_unauthorized(response: Any, what: str) -> None:
    assert response.status_code == 401, (what, response.status_code, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer"), what
    if response.request.method != "HEAD":
        assert set(response.json()) == {"error"}, what


def test_every_route_without_token_is_401(http: Any, routes: list[tuple[str, str]]) -> None:
    for method, path in routes:
        assert_unauthorized(call(http, method, path), f"{method} {path}")


WRONG = {
    "other-token": {"Authorization": "Bearer " + "x" * 28},
    "truncated": {"Authorization": "Bearer " + ADMIN[:-1]},
    "extended": {"Authorization": "Bearer " + ADMIN + "0"},
    "basic-scheme": {"Authorization": "Basic " + ADMIN},
    "no-scheme": {"Authorization": ADMIN},
    "empty-bearer": {"Authorization": "Bearer"},
    "query-not-header": {},
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_every_route_with_wrong_token_is_401(
    http: Any, routes: list[tuple[str, str]], kind: str
) -> None:
    for method, path in routes:
        url = f"{path}?token={ADMIN}" if kind == "query-not-header" else path
        assert_unauthorized(call(http, method, url, **WRONG[kind]), f"{kind}: {method} {path}")


def test_every_route_with_admin_token_is_let_through(
    http: Any, routes: list[tuple[str, str]]
) -> None:
    bad = []
    for method, path in routes:
        response = call(http, method, path, ADMIN)
        if response.status_code in (401, 403) or response.status_code >= 500:
            bad.append((method, path, response.status_code, response.text[:200]))
    assert not bad, bad
    assert call(http, "GET", "/v2/health/live", ADMIN).status_code == 200


def test_predict_token_on_admin_routes_is_403(http: Any, routes: list[tuple[str, str]]) -> None:
    admin = [(m, p) for m, p in routes if p.startswith("/v1/admin")]
    assert len(admin) >= 3
    for method, path in admin:
        response = call(http, method, path, PREDICT)
        assert response.status_code == 403, (method, path, response.text)
        if method != "HEAD":
            assert "error" in response.json()


def test_predict_token_elsewhere_is_let_through(http: Any, routes: list[tuple[str, str]]) -> None:
    bad = []
    for method, path in routes:
        if path.startswith("/v1/admin"):
            continue
        response = call(http, method, path, PREDICT)
        if response.status_code in (401, 403):
            bad.append((method, path, response.status_code))
    assert not bad, bad
    assert call(http, "GET", "/v2/health/live", PREDICT).status_code == 200


@pytest.mark.parametrize(
    "path", ["//v1/admin/routing", "/v1//admin/routing", "/v1/models/../admin/routing",
             "/V1/ADMIN/routing", "/v1/admin/../admin/routing"]
)  # fmt: skip
def test_predict_token_cannot_reach_admin_by_path_tricks(http: Any, path: str) -> None:
    response = call(http, "GET", path, PREDICT)
    assert response.status_code in (403, 404), (path, response.text)


def test_unknown_path_without_token_is_401(http: Any) -> None:
    assert_unauthorized(call(http, "GET", "/no/such/route"), "unknown path")


def test_prediction_with_token_works(http: Any) -> None:
    response = http.post(
        f"/v1/models/{MODEL}/predict",
        json={"records": row_records(2)},
        headers={"Authorization": f"Bearer {PREDICT}"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_lowercase_bearer_scheme_is_accepted(http: Any) -> None:
    response = http.get("/v2/health/live", headers={"Authorization": f"bearer {ADMIN}"})
    assert response.status_code == 200


# -- binding without tokens ----------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    for var in ("MODELLOOP_SERVE_TOKENS", "MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    return env


def test_all_interfaces_without_token_refuses_to_start(home: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "modelloop", "serve", f"{MODEL}@champion",
         "--host", "0.0.0.0", "--port", str(port)],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "--token" in output and "--allow-unauthenticated" in output, output
    assert "Traceback" not in output, output
    # Refused before loading models or binding the port.
    for sign in ("Started server process", "ready:", "Uvicorn running"):
        assert sign not in output, output


def test_allow_unauthenticated_on_all_interfaces_starts(servers: tuple[Server, Server]) -> None:
    import httpx

    srv = servers[1]
    response = httpx.post(
        f"{srv.url}/v1/models/{MODEL}/predict", json={"records": row_records(1)}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert "without authentication" in srv.log()
    assert srv.terminate() == 0
