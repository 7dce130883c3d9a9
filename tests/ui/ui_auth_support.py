"""Helpers for the dashboard's login tests: a real ``modelloop server`` over a filled store with
one user per role, and logging in through the login form (with httpx or a browser page)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from ui_support import Filled, fill_store

from server_support import start_cli_server

MODEL = "cancer"
#: name -> (role, models it is limited to)
USERS: dict[str, tuple[str, list[str] | None]] = {
    "root": ("admin", None),
    "dee": ("deployer", None),
    "ed": ("editor", None),
    "vic": ("viewer", None),
    "sam": ("deployer", ["other-model"]),
}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Team:
    """A running server (``url`` without the dashboard prefix) over ``filled``'s store."""

    url: str
    store_url: str
    filled: Filled
    tokens: dict[str, str]

    @property
    def ui(self) -> str:
        return self.url + "/ui"


@contextmanager
def start_team(base: Path) -> Iterator[Team]:
    """Fill a store, add :data:`USERS` with a token each, and serve it with ``modelloop
    server``."""
    from modelloop._config import Settings
    from modelloop.store._sql import SqlStore

    filled = fill_store(base / "home")
    settings = Settings(home=filled.home)
    store_url = settings.resolved_store_url
    store = SqlStore(store_url)
    tokens = {}
    try:
        for name, (role, models) in USERS.items():
            store.create_user(name, role, models=models, actor="operator")
            tokens[name] = store.create_token(name, "dashboard test", actor="operator")[1]
    finally:
        store.close()
    env = {
        "MODELLOOP_HOME": str(filled.home),
        "MODELLOOP_STORE_URL": store_url,
        "MODELLOOP_ARTIFACT_ROOT": settings.resolved_artifact_root,
    }
    with start_cli_server(env) as (url, _proc):
        yield Team(url, store_url, filled, tokens)


def csrf_in(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def http_login(team: Team, user: str) -> tuple[httpx.Client, str]:
    """An httpx client logged in as ``user`` through the login form, and its session's CSRF
    token (read from a page, as a browser would)."""
    http = httpx.Client(base_url=team.url, timeout=30)
    form = http.get("/ui/login")
    assert form.status_code == 200, form.text
    done = http.post(
        "/ui/login",
        data={"csrf": csrf_in(form.text), "token": team.tokens[user], "next": "/ui/models"},
    )
    assert done.status_code == 303, done.text
    page = http.get("/ui/models")
    assert page.status_code == 200, page.text
    return http, csrf_in(page.text)


def browser_login(page: Any, team: Team, user: str, target: str = "/ui/models") -> None:
    """Log ``page`` in as ``user`` by going to ``target``, being sent to the login page, and
    pasting the token."""
    page.goto(team.url + target)
    assert "/ui/login" in page.url
    page.fill("#token", team.tokens[user])
    page.click("#login-button")
    page.wait_for_load_state("load")
    assert "/ui/login" not in page.url, page.content()


def alias_of(team: Team, alias: str = "champion") -> int | None:
    """Where ``alias`` of the test model points, read from the store itself."""
    from modelloop.store._sql import SqlStore

    store = SqlStore(team.store_url)
    try:
        return store.get_registered_model(MODEL).aliases.get(alias)
    finally:
        store.close()


def audit_events(team: Team, **filters: Any) -> list[Any]:
    from modelloop.store._sql import SqlStore

    store = SqlStore(team.store_url)
    try:
        return store.list_audit_events(**filters)
    finally:
        store.close()
