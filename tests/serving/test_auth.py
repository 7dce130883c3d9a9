"""Bearer auth: token loading, the bind check, and the middleware on a real uvicorn server."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from modelloop.exceptions import InvalidInput
from modelloop.serving._auth import (
    TOKENS_ENV,
    BearerAuthMiddleware,
    Token,
    check_bind,
    is_loopback,
    load_tokens,
)
from s3_support import free_port

ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close()


ROUTES = [
    Route("/v2/health/ready", ok),
    Route("/v1/models/{name}/predict", ok, methods=["POST"]),
    Route("/v1/admin/routing", ok, methods=["GET", "POST"]),
    Route("/metrics", ok),
    WebSocketRoute("/ws", echo),
]
STARTED: list[bool] = []


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Starlette]]:
    """A uvicorn server on a free loopback port running the middleware in front of ROUTES."""
    import contextlib

    import uvicorn

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # the middleware must let lifespan through
        STARTED.append(True)
        yield

    tokens = [Token(ADMIN, "admin"), Token(PREDICT, "predict")]
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(BearerAuthMiddleware, tokens=tokens)],
        lifespan=lifespan,
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(server: tuple[str, Starlette]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the middleware over real HTTP --------------------------------------------------------------


def test_lifespan_passes_through(server: tuple[str, Starlette]) -> None:
    assert STARTED == [True]


def test_missing_token_is_401_with_challenge(client: httpx.Client) -> None:
    r = client.get("/v2/health/ready")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {"error": "missing bearer token"}


def test_wrong_token_is_401_invalid_token(client: httpx.Client) -> None:
    for token in ("x" * 40, ADMIN[:-1], ADMIN + "0", ADMIN.upper()):
        r = client.post("/v1/models/fraud/predict", headers=bearer(token))
        assert r.status_code == 401, token
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json() == {"error": "invalid bearer token"}


@pytest.mark.parametrize(
    "value",
    [f"Basic {ADMIN}", f"Token {ADMIN}", ADMIN, "Bearer", f"Bearer {ADMIN} x", f"Bearer{ADMIN}"],
)
def test_wrong_scheme_is_401(client: httpx.Client, value: str) -> None:
    r = client.get("/v2/health/ready", headers={"Authorization": value})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "error" in r.json()


def test_two_authorization_headers_are_refused(client: httpx.Client) -> None:
    r = client.get(
        "/v2/health/ready",
        headers=[("Authorization", f"Bearer {ADMIN}"), ("Authorization", "Bearer x")],
    )
    assert r.status_code == 401


def test_right_token_reaches_the_app(client: httpx.Client) -> None:
    r = client.post("/v1/models/fraud/predict", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json() == {"path": "/v1/models/fraud/predict"}
    r = client.get("/v2/health/ready", headers={"Authorization": f"bearer {PREDICT}"})
    assert r.status_code == 200  # the scheme is case-insensitive


def test_admin_routes_need_an_admin_token(client: httpx.Client) -> None:
    assert client.post("/v1/admin/routing", headers=bearer(ADMIN)).status_code == 200
    assert client.post("/v1/models/fraud/predict", headers=bearer(PREDICT)).status_code == 200
    r = client.post("/v1/admin/routing", headers=bearer(PREDICT))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert "predict" in r.json()["error"]
    # spellings of the same path do not slip past the role check
    # (http.client sends the path byte for byte; httpx would normalise it first)
    host, port = str(client.base_url.host), client.base_url.port
    paths = ("/v1/admin", "//v1/admin/routing", "/v1/ADMIN/routing", "/v1/x/../admin/routing")
    for path in paths:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path, headers=bearer(PREDICT))
            assert conn.getresponse().status == 403, path
        finally:
            conn.close()


def test_every_route_refuses_a_request_without_token(
    server: tuple[str, Starlette], client: httpx.Client
) -> None:
    app = server[1]
    checked = 0
    for route in app.routes:
        if isinstance(route, Route):
            path = route.path.replace("{name}", "fraud")
            for method in sorted(route.methods or ()):
                r = client.request(method, path)
                assert r.status_code == 401, (method, path)
                checked += 1
    assert checked >= 5


def test_websocket_needs_a_token(server: tuple[str, Starlette]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = server[0].replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as info, connect(url, open_timeout=10):
        pass
    assert info.value.response.status_code == 403  # closed with 1008 before the handshake
    with connect(url, additional_headers=bearer(PREDICT), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


# -- loading tokens -----------------------------------------------------------------------------


def test_load_tokens_from_args_file_and_env(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(
        f"# serving tokens\n\n{'f' * 20}:predict  # the batch scorer\n   {'g' * 16}\n",
        encoding="utf-8",
    )
    env = {TOKENS_ENV: f" {'e' * 16}:admin , ,{'h' * 24}:predict"}
    tokens = load_tokens(tokens=[ADMIN, f"{PREDICT}:predict"], token_file=file, environ=env)
    assert tokens == [
        Token(ADMIN, "admin"),
        Token(PREDICT, "predict"),
        Token("f" * 20, "predict"),
        Token("g" * 16, "admin"),
        Token("e" * 16, "admin"),
        Token("h" * 24, "predict"),
    ]
    assert load_tokens(environ={}) == []
    assert load_tokens(tokens=[ADMIN, ADMIN], environ={}) == [Token(ADMIN)]  # duplicates merge


def test_token_repr_hides_the_value() -> None:
    assert ADMIN not in repr(Token(ADMIN)) and "admin" in repr(Token(ADMIN))


def test_short_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="at least 16") as info:
        load_tokens(tokens=["short-secret"], environ={})
    assert "short-secret" not in str(info.value) and "--token #1" in str(info.value)
    file = tmp_path / "tokens"
    file.write_text(f"{ADMIN}\nabc:predict\n")
    with pytest.raises(InvalidInput, match="line 2"):
        load_tokens(token_file=file, environ={})
    with pytest.raises(InvalidInput, match=TOKENS_ENV):
        load_tokens(environ={TOKENS_ENV: f"{ADMIN},tiny"})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (f"{ADMIN}:root", "unknown role 'root'"),
        ("has space inside the token 0123", "only letters"),
        ('quote"inside-0123456789', "only letters"),
    ],
)
def test_bad_token_specs_are_refused(spec: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        load_tokens(tokens=[spec], environ={})


def test_same_token_with_two_roles_is_refused() -> None:
    with pytest.raises(InvalidInput, match="also given with role"):
        load_tokens(tokens=[ADMIN], environ={TOKENS_ENV: f"{ADMIN}:predict"})


def test_missing_token_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read token file"):
        load_tokens(token_file=tmp_path / "nope", environ={})


# -- where the server may listen ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10"):
        with pytest.raises(InvalidInput) as info:
            check_bind(host, [], allow_unauthenticated=False)
        message = str(info.value)
        assert host in message and "--token" in message and "--allow-unauthenticated" in message
        check_bind(host, [Token(ADMIN)], allow_unauthenticated=False)  # tokens: fine
        check_bind(host, [], allow_unauthenticated=True)  # explicit opt-out: fine
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, [], allow_unauthenticated=False)
