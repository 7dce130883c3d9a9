"""Users, tokens, roles and audit over real HTTP: a uvicorn process serving the access router and
routes guarded with ``require``/``check_model``/``audit``, over a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from access_app_support import SRC, AppServer, start_app

from modelloop.access import Role
from modelloop.access._serve import server_user_check
from modelloop.exceptions import InvalidInput
from modelloop.store._sql import SqlStore

ROLES = [Role.VIEWER, Role.EDITOR, Role.DEPLOYER, Role.ADMIN]


class App:
    """The running app, its store (opened in the test process too) and an admin token."""

    def __init__(self, server: AppServer, store: SqlStore) -> None:
        self.server = server
        self.store = store
        self.http = httpx.Client(base_url=server.url + "/api/v1", timeout=30)
        self.root = ""

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, **kw)

    def bootstrap(self) -> str:
        """An admin ``root`` made directly in the store (as an operator would), and its token."""
        self.store.create_user("root", "admin", actor="operator")
        self.root = self.store.create_token("root", "bootstrap", actor="operator")[1]
        return self.root

    def user_with_token(self, name: str, role: str, models: list[str] | None = None) -> str:
        r = self.call("POST", "/users", self.root, json={"name": name, "role": role,
                                                         "models": models})  # fmt: skip
        assert r.status_code == 201, r.text
        r = self.call("POST", "/tokens", self.root, json={"user": name, "description": "t"})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Iterator[App]:
    store = SqlStore(store_url)
    store.upgrade()
    server = start_app(store_url, tmp_path / "app")
    a = App(server, store)
    try:
        yield a
    finally:
        a.http.close()
        server.stop()
        store.close()


def assert_401(r: httpx.Response, token: str | None = None) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith('Bearer realm="modelloop"')
    if token:
        secret = token.split("_", 2)[-1]  # the secret itself may hold "_"
        assert token not in r.text and secret not in r.text


def test_open_mode_ends_with_the_first_user(app: App) -> None:
    r = app.call("GET", "/whoami")
    assert r.status_code == 200 and r.json() == {"name": "local", "role": "admin", "models": None}
    r = app.call("POST", "/users", json={"name": "root", "role": "admin"})
    assert r.status_code == 201
    assert_401(app.call("GET", "/whoami"))
    assert_401(app.call("GET", "/ping"))
    assert_401(app.call("POST", "/users", json={"name": "eve", "role": "admin"}))
    assert [u.name for u in app.store.list_users()] == ["root"]
    created = app.store.list_audit_events(entity_type="user")[0]
    assert (created.actor, created.route) == ("local", "POST /api/v1/users")


def test_token_lifecycle_over_http(app: App) -> None:
    app.bootstrap()
    bob = app.user_with_token("bob", "editor")
    token_id = bob.split("_")[1]
    assert app.call("GET", "/whoami", bob).json() == {"name": "bob", "role": "editor",
                                                       "models": None}  # fmt: skip

    # the right id with a wrong secret, a garbage token, a wrong scheme
    wrong = bob[:-3] + ("xyz" if not bob.endswith("xyz") else "abc")
    assert_401(app.call("GET", "/whoami", wrong), wrong)
    assert_401(app.call("GET", "/whoami", "not-a-token-at-all"), "not-a-token-at-all")
    r = app.call("GET", "/whoami", headers={"Authorization": f"Basic {bob}"})
    assert_401(r, bob)
    r = app.call("GET", "/whoami", headers=[("Authorization", f"Bearer {bob}")] * 2)
    assert_401(r, bob)

    # revocation takes effect on the very next request
    r = app.call("POST", f"/tokens/{token_id}/revoke", app.root)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert_401(app.call("GET", "/whoami", bob), bob)

    # a disabled user's tokens stop at once; enabling brings the unrevoked ones back
    r = app.call("POST", "/tokens", app.root, json={"user": "bob"})
    bob2 = r.json()["token"]
    assert app.call("GET", "/ping", bob2).status_code == 200
    r = app.call("PATCH", "/users/bob", app.root, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert_401(app.call("GET", "/ping", bob2), bob2)
    assert app.call("PATCH", "/users/bob", app.root, json={"disabled": False}).status_code == 200
    assert app.call("GET", "/ping", bob2).json() == {"user": "bob"}

    # tokens are listed without secrets; a user sees only their own
    listed = app.call("GET", "/tokens", app.root, params={"user": "bob"}).json()
    assert [t["token_id"] for t in listed] == [token_id, bob2.split("_")[1]]
    assert bob2 not in json.dumps(listed) and "scrypt" not in json.dumps(listed)
    own = app.call("GET", "/tokens", bob2).json()
    assert {t["user"] for t in own} == {"bob"}
    assert app.call("GET", "/tokens", bob2, params={"user": "root"}).status_code == 403
    # a user may revoke their own token, not someone else's
    root_id = app.root.split("_")[1]
    assert app.call("POST", f"/tokens/{root_id}/revoke", bob2).status_code == 403
    assert app.call("POST", f"/tokens/{bob2.split('_')[1]}/revoke", bob2).status_code == 200
    assert_401(app.call("GET", "/ping", bob2), bob2)
    assert app.call("GET", "/ping", app.root).status_code == 200


def test_roles_are_ordered_on_every_guarded_route(app: App) -> None:
    app.bootstrap()
    exp = app.store.create_experiment("e")
    run = app.store.create_run(exp.experiment_id, name="r", user="root")
    app.store.create_registered_model("m1", actor="root")
    app.store.create_model_version("m1", source="runs:/x/model", run_id=run.run_id, actor="root")
    tokens = {role: app.user_with_token(f"u-{role.value}", role.value) for role in ROLES}
    needs = [
        ("GET", "/ping", None, Role.VIEWER),
        ("GET", "/models/m1/notes", None, Role.VIEWER),
        ("PUT", "/models/m1/notes", {"notes": "n"}, Role.EDITOR),
        ("PUT", "/models/m1/aliases/champion", {"version": 1}, Role.DEPLOYER),
        ("GET", "/users", None, Role.ADMIN),
        ("GET", "/audit", None, Role.ADMIN),
        ("POST", "/tokens", {"user": "u-viewer"}, Role.ADMIN),
    ]
    for method, path, body, needed in needs:
        for role, token in tokens.items():
            r = app.call(method, path, token, json=body)
            if role >= needed:
                assert r.status_code in (200, 201), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.text)
                assert "insufficient_scope" in r.headers["www-authenticate"]
                assert f"needs {needed.value!r}" in r.json()["detail"]
        assert_401(app.call(method, path, None, json=body))


def test_a_scoped_user_reaches_only_its_models(app: App) -> None:
    app.bootstrap()
    ed = app.user_with_token("ed", "editor", ["m1"])
    assert app.call("PUT", "/models/m1/notes", ed, json={"notes": "a"}).status_code == 200
    r = app.call("PUT", "/models/m2/notes", ed, json={"notes": "b"})
    assert r.status_code == 403 and "may not act on model 'm2'" in r.json()["detail"]
    assert app.call("GET", "/models/m2/notes", ed).status_code == 403
    assert app.call("GET", "/audit", ed).status_code == 403  # the whole log: admins only
    assert app.call("GET", "/audit", ed, params={"model": "m2"}).status_code == 403
    mine = app.call("GET", "/audit", ed, params={"model": "m1"}).json()
    assert [(e["actor"], e["action"]) for e in mine] == [("ed", "model_notes.set")]
    # widening the scope takes effect on the next request
    r = app.call("PATCH", "/users/ed", app.root, json={"models": ["m1", "m2"]})
    assert r.json()["models"] == ["m1", "m2"]
    assert app.call("PUT", "/models/m2/notes", ed, json={"notes": "b"}).status_code == 200
    r = app.call("PATCH", "/users/ed", app.root, json={"role": "admin"})
    assert r.status_code == 400 and "admin cannot be" in r.json()["detail"]
    r = app.call("PATCH", "/users/root", app.root, json={"role": "viewer"})
    assert r.status_code == 409  # an admin cannot demote themselves
    r = app.call("POST", "/users", app.root, json={"name": "x", "role": "viewer", "extra": 1})
    assert r.status_code == 422  # unknown fields are refused


def test_audit_names_the_authenticated_user_route_and_change(app: App) -> None:
    app.bootstrap()
    exp = app.store.create_experiment("e")
    run = app.store.create_run(exp.experiment_id, name="r", user="root")
    app.store.create_registered_model("m1", actor="root")
    for _ in range(2):
        app.store.create_model_version("m1", source="runs:/x/m", run_id=run.run_id, actor="root")
    alice = app.user_with_token("alice", "editor")
    bob = app.user_with_token("bob", "deployer")
    spoof = {"X-Modelloop-User": "mallory", "X-Forwarded-User": "mallory"}
    steps = [
        (alice, "PUT", "/models/m1/notes", {"notes": "first"}),
        (bob, "PUT", "/models/m1/aliases/champion", {"version": 1}),
        (alice, "PUT", "/models/m1/notes", {"notes": "second"}),
        (bob, "PUT", "/models/m1/aliases/champion", {"version": 2}),
        (bob, "PUT", "/models/m2/notes", {"notes": "other model"}),
    ]
    for token, method, path, body in steps:
        # a name offered by the client, in the body and in headers, is never what is recorded
        r = app.call(method, path, token, json={**body, "user": "mallory"}, headers=dict(spoof))
        assert r.status_code == 200, r.text

    events = app.call("GET", "/audit", app.root, params={"model": "m1"}).json()
    changes = [
        (e["actor"], e["action"], e["route"], e["before"], e["after"])
        for e in events
        if e["actor"] in ("alice", "bob")
    ]
    notes_route = "PUT /api/v1/models/{name}/notes"
    assert changes == [
        ("alice", "model_notes.set", notes_route, None, {"notes": "first"}),
        ("bob", "alias.set", None, None, {"version": 1}),
        ("alice", "model_notes.set", notes_route, {"notes": "first"}, {"notes": "second"}),
        ("bob", "alias.set", None, {"version": 1}, {"version": 2}),
    ]
    assert all(e["actor"] != "mallory" for e in app.call("GET", "/audit", app.root).json())
    by_bob = app.call("GET", "/audit", app.root, params={"user": "bob"}).json()
    assert [e["model"] for e in by_bob] == ["m1", "m1", "m2"]
    # user and token changes are in the log too, by the admin who made them, with the route
    made = app.call("GET", "/audit", app.root, params={"user": "root"}).json()
    assert ("user.create", "POST /api/v1/users") in {(e["action"], e["route"]) for e in made}
    assert ("token.create", "POST /api/v1/tokens") in {(e["action"], e["route"]) for e in made}
    assert all("mlt_" not in json.dumps(e) for e in made)


def test_no_route_can_change_the_audit_log(app: App) -> None:
    root = app.bootstrap()
    app.call("PUT", "/models/m1/notes", root, json={"notes": "x"})
    before = app.call("GET", "/audit", root).json()
    spec = httpx.get(app.server.url + "/openapi.json").json()
    for path, operations in spec["paths"].items():
        if "audit" in path:
            assert set(operations) == {"get"}, path
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = app.call(method, "/audit", root, json={})
        assert r.status_code == 405, (method, r.status_code)
        r = app.call(method, f"/audit/{before[0]['event_id']}", root, json={})
        assert r.status_code in (404, 405), (method, r.status_code)
    assert app.call("GET", "/audit", root).json() == before


def test_the_model_server_checks_tokens_through_the_server(app: App) -> None:
    with pytest.raises(InvalidInput, match="open mode"):
        server_user_check(app.server.url)  # it would call anyone an admin
    app.bootstrap()
    dep = app.user_with_token("dep", "deployer", ["m1"])
    view = app.user_with_token("view", "viewer")
    check = server_user_check(app.server.url)
    assert check(dep) is not None and check(dep).role == "admin"  # type: ignore[union-attr]
    assert check(dep).models == frozenset({"m1"})  # type: ignore[union-attr]
    assert check(view).role == "predict"  # type: ignore[union-attr]
    assert check("mlt_0123456789abcdef_" + "a" * 43) is None
    app.call("POST", f"/tokens/{view.split('_')[1]}/revoke", app.root)
    assert check(view) is None


def _cli(
    app: App, tmp_path: Path, *args: str, token: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    env.update(
        MODELLOOP_HOME=str(tmp_path / "clienthome"),
        MODELLOOP_STORE_URL=app.server.url,
        PYTHONPATH=str(SRC),
    )
    if token is not None:
        env["MODELLOOP_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_cli_works_over_the_server(app: App, tmp_path: Path) -> None:
    root = app.bootstrap()
    r = _cli(app, tmp_path, "users", "add", "carol", "--role", "editor", "--model", "m1",
             "--json", token=root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["user"]["models"] == ["m1"]
    r = _cli(app, tmp_path, "tokens", "create", "--user", "carol", "--description", "ci",
             "--json", token=root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    carol = created["token"]
    assert app.call("GET", "/whoami", carol).json()["name"] == "carol"
    r = _cli(app, tmp_path, "tokens", "list", "--json", token=carol)
    assert [t["token_id"] for t in json.loads(r.stdout)["tokens"]] == [created["info"]["token_id"]]
    r = _cli(app, tmp_path, "users", "set-role", "carol", "deployer", "--json", token=root)
    assert json.loads(r.stdout)["user"] == {**json.loads(r.stdout)["user"], "role": "deployer",
                                            "models": None}  # fmt: skip
    r = _cli(app, tmp_path, "users", "list", "--json", token=carol)
    assert r.returncode == 9 and "needs 'admin'" in r.stderr  # Forbidden
    r = _cli(app, tmp_path, "users", "list", token=None)
    assert r.returncode == 8 and "MODELLOOP_TOKEN" in r.stderr  # Unauthorized, with a hint
    r = _cli(app, tmp_path, "tokens", "revoke", created["info"]["token_id"], token=root)
    assert r.returncode == 0, r.stderr
    assert_401(app.call("GET", "/whoami", carol), carol)
    r = _cli(app, tmp_path, "users", "disable", "carol", "--json", token=root)
    assert json.loads(r.stdout)["user"]["disabled"] is True
    r = _cli(app, tmp_path, "audit", "list", "--user", "root", "--since", "1h", "--json",
             token=root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    assert [e["action"] for e in events] == [
        "user.create", "token.create", "user.update", "token.revoke", "user.disable"
    ]  # fmt: skip
    assert {e["actor"] for e in events} == {"root"}
    assert events[2]["before"]["role"] == "editor" and events[2]["after"]["role"] == "deployer"
    assert all(e["route"].split()[1].startswith("/api/v1/") for e in events)
    r = _cli(app, tmp_path, "users", "add", "carol", "--role", "viewer", token=root)
    assert r.returncode == 4 and "already exists" in r.stderr  # Conflict
