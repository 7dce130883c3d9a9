"""The role matrix, generated from the live ``/openapi.json``: every route is called with no
token, a bad token, a revoked token and a token of each role; exactly the roles the table below
allows get past authentication and authorisation (any status but 401/403). A route the table
does not know fails the test, so a new route cannot ship without a decided role. The dashboard
mounted at ``/ui`` is not in the OpenAPI document: its POST routes have their own matrix in
``tests/ui/test_ui_login.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelloop.store._sql import SqlStore

#: The least role of every route (None: public). The access routes are called as one user
#: about another (``/users/m``) and ``/audit`` without a model: then only an admin may.
ROLE_TABLE: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/api/v1/experiments"): "viewer",
    ("POST", "/api/v1/experiments"): "editor",
    ("POST", "/api/v1/experiments/get-or-create"): "editor",
    ("GET", "/api/v1/experiments/by-name"): "viewer",
    ("GET", "/api/v1/experiments/{experiment_id}"): "viewer",
    ("POST", "/api/v1/runs"): "editor",
    ("POST", "/api/v1/runs/search"): "viewer",
    ("POST", "/api/v1/runs/heartbeat"): "editor",
    ("POST", "/api/v1/runs/end-stale"): "editor",
    ("POST", "/api/v1/runs/artifacts"): "editor",
    ("GET", "/api/v1/runs/{run_id}"): "viewer",
    ("POST", "/api/v1/runs/{run_id}/end"): "editor",
    ("POST", "/api/v1/runs/{run_id}/params"): "editor",
    ("POST", "/api/v1/runs/{run_id}/tags"): "editor",
    ("POST", "/api/v1/runs/{run_id}/metrics"): "editor",
    ("GET", "/api/v1/runs/{run_id}/metrics/history"): "viewer",
    ("GET", "/api/v1/runs/{run_id}/metrics/count"): "viewer",
    ("GET", "/api/v1/runs/{run_id}/artifacts"): "viewer",
    ("POST", "/api/v1/runs/{run_id}/datasets"): "editor",
    ("GET", "/api/v1/runs/{run_id}/datasets"): "viewer",
    ("POST", "/api/v1/datasets"): "editor",
    ("GET", "/api/v1/datasets"): "viewer",
    ("GET", "/api/v1/datasets/{dataset_id}"): "viewer",
    ("GET", "/api/v1/models"): "viewer",
    ("POST", "/api/v1/models"): "editor",
    ("GET", "/api/v1/models/{name}"): "viewer",
    ("POST", "/api/v1/models/{name}/versions"): "editor",
    ("GET", "/api/v1/models/{name}/versions"): "viewer",
    ("GET", "/api/v1/models/{name}/versions/{version}"): "viewer",
    ("PATCH", "/api/v1/models/{name}/versions/{version}/tags"): "editor",
    ("GET", "/api/v1/models/{name}/aliases/{alias}"): "viewer",
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): "deployer",
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): "deployer",
    ("GET", "/api/v1/store"): "viewer",
    ("POST", "/api/v1/monitoring/results"): "editor",
    ("GET", "/api/v1/monitoring/results"): "viewer",
    ("GET", "/api/v1/alerts"): "viewer",
    ("PUT", "/api/v1/alerts"): "editor",
    ("POST", "/api/v1/alerts/transition"): "editor",
    ("GET", "/api/v1/alerts/state"): "viewer",
    ("GET", "/api/v1/alerts/events"): "viewer",
    ("GET", "/api/v1/loop/states"): "viewer",
    ("GET", "/api/v1/loop/states/{model_name}"): "viewer",
    ("POST", "/api/v1/loop/states/{model_name}/transition"): "deployer",
    ("POST", "/api/v1/loop/states/{model_name}/pause"): "deployer",
    ("POST", "/api/v1/loop/states/{model_name}/resume"): "deployer",
    ("POST", "/api/v1/loop/states/{model_name}/approve"): "deployer",
    ("POST", "/api/v1/loop/states/{model_name}/reject"): "deployer",
    ("POST", "/api/v1/loop/events/{model_name}"): "deployer",
    ("GET", "/api/v1/loop/events/{model_name}"): "viewer",
    ("POST", "/api/v1/loop/leases/{model_name}"): "deployer",
    ("DELETE", "/api/v1/loop/leases/{model_name}"): "deployer",
    ("PUT", "/api/v1/artifacts/blobs/{sha256}"): "editor",
    ("GET", "/api/v1/artifacts/blobs/{sha256}"): "viewer",
    ("HEAD", "/api/v1/artifacts/blobs/{sha256}"): "viewer",
    ("POST", "/api/v1/artifacts/check"): "editor",
    ("GET", "/api/v1/whoami"): "viewer",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/{name}"): "admin",
    ("PATCH", "/api/v1/users/{name}"): "admin",
    ("GET", "/api/v1/tokens"): "viewer",
    ("POST", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens/{token_id}/revoke"): "viewer",
    ("GET", "/api/v1/audit"): "admin",
}

RANK = {"viewer": 0, "editor": 1, "deployer": 2, "admin": 3}
FILL = {
    "experiment_id": "1", "run_id": "0" * 32, "dataset_id": "1", "name": "m", "version": "1",
    "alias": "champion", "model_name": "m", "sha256": "0" * 64, "token_id": "t" * 16,
}  # fmt: skip
# Required query parameters, so that a request that passes auth reaches its handler.
QUERY = {"name": "e", "key": "k", "model_name": "m", "rule": "r", "holder": "h"}


@pytest.fixture
def server(server_launcher: Any, store_url: str, tmp_path: Path) -> Iterator[tuple[str, dict]]:
    """A server whose store has one user (and token) per role, plus a revoked token."""
    store = SqlStore(store_url)
    tokens: dict[str, str | None] = {"no token": None, "bad token": "mlt_not-a-real-token"}
    for role in RANK:
        store.create_user(role, role, actor="operator")
        tokens[role] = store.create_token(role, "matrix", actor="operator")[1]
    info, revoked = store.create_token("admin", "to revoke", actor="operator")
    store.revoke_token(info.token_id, actor="operator")
    tokens["revoked token"] = revoked
    store.close()
    running = server_launcher.start(store_url, tmp_path / "artifacts", tmp_path / "home")
    try:
        yield running.url, tokens
    finally:
        server_launcher.stop(running)


def test_every_route_lets_exactly_its_roles_in(server: tuple[str, dict]) -> None:
    url, tokens = server
    spec = httpx.get(f"{url}/openapi.json").json()
    routes = sorted((m.upper(), p) for p, ms in spec["paths"].items() for m in ms)
    unknown = [r for r in routes if r not in ROLE_TABLE]
    assert not unknown, f"routes without a decided role: {unknown}"
    assert len(routes) == len(ROLE_TABLE), set(ROLE_TABLE) - set(routes)
    http = httpx.Client(base_url=url, timeout=30)
    wrong = []
    for method, template in routes:
        least = ROLE_TABLE[(method, template)]
        path = template.format(**FILL)
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = http.request(method, path, params=QUERY, json={}, headers=headers)
            allowed = least is None or (who in RANK and RANK[who] >= RANK[least])
            passed = r.status_code not in (401, 403)
            if passed != allowed:
                wrong.append((method, template, who, r.status_code))
            if r.status_code == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            if token:
                assert token not in r.text
    http.close()
    assert not wrong, wrong
