"""``modelloop ui`` (one person, loopback, no login) lets its user move aliases, with the same
confirmation, CSRF token and origin checks as the server's dashboard, and answers only loopback
host names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ui_auth_support import MODEL, csrf_in
from ui_support import Filled, UiServer, Watched, fill_store, start_ui

LOCAL_USER = "ada-local"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Filled, UiServer]]:
    filled = fill_store(tmp_path_factory.mktemp("uilocal") / "home")
    server = start_ui(filled.home, env_extra={"MODELLOOP_USER": LOCAL_USER})
    try:
        yield filled, server
    finally:
        server.stop()


def _store(filled: Filled) -> Any:
    from modelloop._config import Settings
    from modelloop.store._sql import SqlStore

    return SqlStore(Settings(home=filled.home).resolved_store_url)


def _champion(filled: Filled) -> int | None:
    store = _store(filled)
    try:
        return store.get_registered_model(MODEL).aliases.get("champion")
    finally:
        store.close()


def test_the_local_user_promotes_after_confirming(
    local: tuple[Filled, UiServer], watched: Watched
) -> None:
    filled, server = local
    page = watched.page
    page.goto(f"{server.url}/models/{MODEL}")
    assert page.locator("#logout").count() == 0  # no login, so no logout
    assert _champion(filled) == 2
    page.select_option("#promote-version", "1")
    page.click("#promote")
    page.wait_for_load_state("load")
    assert _champion(filled) == 2
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert _champion(filled) == 1
    store = _store(filled)
    try:
        event = store.list_audit_events(entity_id=f"{MODEL}@champion")[-1]
    finally:
        store.close()
    assert event.actor == LOCAL_USER
    assert event.route == "POST /models/{name}/promote"
    page.click("#rollback-champion")
    page.wait_for_load_state("load")
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert _champion(filled) == 2
    # the local user owns the store, so the audit page is there too
    page.click("#audit-link")
    page.wait_for_load_state("load")
    assert LOCAL_USER in page.locator("#audit-events td.actor").all_inner_texts()
    watched.shot("audit-local")


def test_local_writes_need_the_csrf_token_and_a_loopback_host(
    local: tuple[Filled, UiServer],
) -> None:
    filled, server = local
    with httpx.Client(base_url=server.url, timeout=30) as http:
        csrf = csrf_in(http.get(f"/models/{MODEL}/promote?alias=champion&version=1").text)
        form = {"alias": "champion", "version": "1", "expected": "2"}
        path = f"/models/{MODEL}/promote"
        assert http.post(path, data=form).status_code == 403
        assert http.post(path, data={**form, "csrf": "wrong"}).status_code == 403
        cross = http.post(path, data={**form, "csrf": csrf}, headers={"Origin": "http://evil.test"})
        assert cross.status_code == 403
        # a DNS-rebound name reaches loopback but is not answered, reads included
        rebound = http.get(f"/models/{MODEL}", headers={"Host": "evil.test"})
        assert rebound.status_code == 403
        assert _champion(filled) == 2
        # no login here: the login page leads home
        assert http.get("/login").status_code == 303
