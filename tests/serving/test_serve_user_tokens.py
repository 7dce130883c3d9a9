"""One identity on both servers: ``modelloop serve`` accepting the tokens of the store's users
(real ``modelloop serve`` processes; the users in a SQLite file or in PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import Server, register_rf, row_records, start_server

from modelloop.store._sql import SqlStore

STATIC = "static-predict-token-0123456789"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _predict(http: httpx.Client, model: str, token: str | None) -> httpx.Response:
    headers = _auth(token) if token else {}
    return http.post(f"/v1/models/{model}/predict", json={"records": row_records(2)},
                     headers=headers)  # fmt: skip


class Setup:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = SqlStore(f"sqlite:///{home / 'modelloop.db'}")
        self.tokens: dict[str, str] = {}

    def add(self, name: str, role: str, models: list[str] | None = None) -> str:
        self.store.create_user(name, role, models=models, actor="operator")
        self.tokens[name] = self.store.create_token(name, "serve test")[1]
        return self.tokens[name]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("serve-users") / "home"
    register_rf(home, "cancer")
    register_rf(home, "other")
    s = Setup(home)
    s.add("vic", "viewer")
    s.add("eddy", "editor", ["other"])
    s.add("dora", "deployer")
    s.add("dan", "viewer")
    yield s
    s.store.close()


@pytest.fixture(scope="module")
def server(setup: Setup) -> Iterator[Server]:
    """On all interfaces with no token of its own: the store's users are its only auth (the
    bind check accepts that)."""
    srv = start_server(setup.home, ["cancer@champion", "other@champion"], "--host", "0.0.0.0",
                       "--no-log", headers=_auth(setup.tokens["vic"]))  # fmt: skip
    try:
        yield srv
    finally:
        srv.terminate()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_a_viewer_token_predicts_and_nothing_else_gets_in(setup: Setup, http: Any) -> None:
    r = _predict(http, "cancer", setup.tokens["vic"])
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    for token in (None, "garbage-token-0123456789", "mlt_0123456789abcdef_" + "a" * 43):
        r = _predict(http, "cancer", token)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith('Bearer realm="modelloop"')
        assert token is None or token not in r.text
    wrong = setup.tokens["vic"][:-2] + ("zz" if not setup.tokens["vic"].endswith("zz") else "yy")
    assert _predict(http, "cancer", wrong).status_code == 401


def test_deployers_reach_the_admin_routes_viewers_do_not(setup: Setup, http: Any) -> None:
    r = http.post("/v1/admin/reload", headers=_auth(setup.tokens["vic"]))
    assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
    r = http.post("/v1/admin/reload", headers=_auth(setup.tokens["dora"]))
    assert r.status_code == 200, r.text
    r = http.get("/v1/admin/routing", headers=_auth(setup.tokens["dora"]))
    assert r.status_code == 200 and {m["name"] for m in r.json()["models"]} == {"cancer", "other"}


def test_a_scoped_user_reaches_only_its_model(setup: Setup, http: Any) -> None:
    eddy = setup.tokens["eddy"]
    assert _predict(http, "other", eddy).status_code == 200
    r = _predict(http, "cancer", eddy)
    assert r.status_code == 403 and "may not use model 'cancer'" in r.json()["error"]
    assert http.get("/v2/models/cancer/ready", headers=_auth(eddy)).status_code == 403
    assert http.get("/v2/models/other/ready", headers=_auth(eddy)).status_code == 200
    assert http.get("/v1/models", headers=_auth(eddy)).status_code == 403  # lists every model
    assert http.get("/v2/health/ready", headers=_auth(eddy)).status_code == 200


def test_revoking_or_disabling_stops_a_token_at_once(setup: Setup, http: Any) -> None:
    dan = setup.tokens["dan"]
    assert _predict(http, "cancer", dan).status_code == 200
    setup.store.update_user("dan", disabled=True, actor="operator")
    assert _predict(http, "cancer", dan).status_code == 401
    setup.store.update_user("dan", disabled=False, actor="operator")
    assert _predict(http, "cancer", dan).status_code == 200
    setup.store.revoke_token(dan.split("_")[1], actor="operator")
    assert _predict(http, "cancer", dan).status_code == 401


def test_no_users_flag_keeps_the_old_behaviour(setup: Setup) -> None:
    """With --no-users the store's users are ignored: on loopback without tokens it is open, and
    a user token is just an unknown bearer token where tokens are configured."""
    srv = start_server(setup.home, ["cancer@champion"], "--no-users", "--no-log",
                       "--token", f"{STATIC}:predict", headers=_auth(STATIC))  # fmt: skip
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            assert _predict(http, "cancer", STATIC).status_code == 200
            assert _predict(http, "cancer", setup.tokens["vic"]).status_code == 401
    finally:
        srv.terminate()


@pytest.mark.postgres
def test_users_in_postgresql_and_static_tokens_work_together(tmp_path: Path, pg_url: str) -> None:
    from serving_support import breast_cancer
    from sklearn.linear_model import LogisticRegression

    from modelloop._client import Client
    from modelloop._config import Settings

    home = tmp_path / "home"
    X, y = breast_cancer()
    client = Client(Settings(home=home, store_url=pg_url))
    try:
        with client.start_run(experiment="serve-users") as run:
            client.log_model(run.run_id, LogisticRegression(max_iter=5000).fit(X, y), "model",
                             input_example=X.head(5))  # fmt: skip
        client.set_alias("cancer", "champion", client.register_model(run.run_id, "cancer").version)
    finally:
        client.close()
    store = SqlStore(pg_url)
    store.create_user("pat", "editor")
    pat = store.create_token("pat")[1]
    srv = start_server(home, ["cancer@champion"], "--no-log", headers=_auth(pat),
                       env={"MODELLOOP_STORE_URL": pg_url,
                            "MODELLOOP_SERVE_TOKENS": f"{STATIC}:predict"})  # fmt: skip
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            assert _predict(http, "cancer", pat).status_code == 200
            assert _predict(http, "cancer", STATIC).status_code == 200
            assert http.post("/v1/admin/reload", headers=_auth(STATIC)).status_code == 403
            assert http.post("/v1/admin/reload", headers=_auth(pat)).status_code == 403
            store.update_user("pat", role="deployer", actor="operator")
            assert http.post("/v1/admin/reload", headers=_auth(pat)).status_code == 200
            store.revoke_token(pat.split("_")[1], actor="operator")
            assert _predict(http, "cancer", pat).status_code == 401
            assert _predict(http, "cancer", STATIC).status_code == 200
    finally:
        srv.terminate()
        store.close()
