"""The dashboard served by a real ``modelloop server`` with users: login with a token, the
session cookie, logout, roles on pages and on writes, CSRF, confirmation, rollback and the audit
page, driven through Chromium and checked in the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ui_auth_support import (
    MODEL,
    Team,
    alias_of,
    audit_events,
    browser_login,
    csrf_in,
    http_login,
    start_team,
)
from ui_support import Watched

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    with start_team(tmp_path_factory.mktemp("uilogin")) as running:
        yield running


def _loop_state(team: Team) -> tuple[str, int] | None:
    from modelloop.store._sql import SqlStore

    store = SqlStore(team.store_url)
    try:
        state = store.get_loop_state(MODEL)
    finally:
        store.close()
    return None if state is None else (state.state, state.revision)


def _promote_form(csrf: str, version: int, expected: int | None) -> dict[str, str]:
    return {
        "csrf": csrf,
        "alias": "champion",
        "version": str(version),
        "expected": "" if expected is None else str(expected),
    }


def test_unauthenticated_pages_redirect_to_login(team: Team) -> None:
    with httpx.Client(base_url=team.url, timeout=30) as http:
        for path in ("/ui/", "/ui/models", f"/ui/models/{MODEL}", "/ui/audit", "/ui/compare"):
            r = http.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith(f"{team.url}/ui/login?next=")
        # the server's root leads to the dashboard, and the login page itself is open
        assert http.get("/").headers["location"] == "/ui/"
        assert http.get("/ui/login").status_code == 200
        # a login posted without the login page's own token (another page's form) is refused
        forged = http.post("/ui/login", data={"token": team.tokens["root"]})
        assert forged.status_code == 403
        assert "modelloop_session" not in forged.headers.get("set-cookie", "")
        # a write without a session is refused, not redirected
        r = http.post(f"/ui/models/{MODEL}/promote", data={"alias": "champion", "version": "1"})
        assert r.status_code == 403


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(
    team: Team, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{team.url}/ui/models/{MODEL}")
    assert "/ui/login" in page.url
    watched.shot("login")
    page.fill("#token", team.tokens["vic"])
    page.click("#login-button")
    page.wait_for_load_state("load")
    assert page.url == f"{team.url}/ui/models/{MODEL}"  # back where the user was going
    assert page.inner_text("#whoami") == "vic (viewer)"
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["modelloop_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"
    assert session["secure"] is False  # plain HTTP here; TLS sets Secure
    assert session["expires"] > 0
    assert team.tokens["vic"] not in session["value"]  # an opaque id, never the token
    assert "modelloop_login" not in cookies
    assert page.evaluate("document.cookie") == ""  # invisible to scripts
    old = session["value"]

    page.click("#logout")
    page.wait_for_load_state("load")
    assert "/ui/login" in page.url
    assert "modelloop_session" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{team.url}/ui/models")
    assert "/ui/login" in page.url
    # the old cookie, replayed, opens nothing: the session is gone on the server
    with httpx.Client(base_url=team.url, timeout=30, cookies={"modelloop_session": old}) as http:
        assert http.get("/ui/models").status_code == 303


def test_a_wrong_token_is_refused(team: Team, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{team.url}/ui/login")
    page.fill("#token", "mlt_not-a-real-token")
    page.click("#login-button")
    page.wait_for_load_state("load")
    assert "invalid, revoked or disabled token" in page.inner_text("#login-error")
    assert "modelloop_session" not in {c["name"] for c in page.context.cookies()}
    assert len(watched.failed_requests) == 1 and "HTTP 401" in watched.failed_requests[0]
    watched.failed_requests.clear()
    watched.console_errors.clear()  # the browser's note of the same 401


def test_a_viewer_sees_no_write_controls_and_a_forged_write_is_refused(
    team: Team, watched: Watched
) -> None:
    page = watched.page
    browser_login(page, team, "vic", f"/ui/models/{MODEL}")
    assert page.locator("#aliases").count() == 1
    assert page.locator("#write-controls, #promote, .rollback").count() == 0
    assert page.locator("#audit-link").count() == 0
    page.goto(f"{team.url}/ui/models/{MODEL}/loop")
    assert page.locator("#loop-controls").count() == 0
    csrf = csrf_in(page.content())  # the logout form's: a valid token of this session
    before = alias_of(team)
    events = len(audit_events(team))
    loop_before = _loop_state(team)
    for path, data in (
        (f"/ui/models/{MODEL}/promote", _promote_form(csrf, 1, before)),
        (f"/ui/models/{MODEL}/rollback", _promote_form(csrf, 1, before)),
        (f"/ui/models/{MODEL}/loop/retrain", {"csrf": csrf, "expected": str(loop_before[1])}),
    ):
        r = page.request.post(team.url + path, form=data, max_redirects=0)
        assert r.status == 403, (path, r.status)
        assert "this needs &#39;deployer&#39; or higher" in r.text()  # shown escaped
    assert alias_of(team) == before
    assert _loop_state(team) == loop_before
    assert len(audit_events(team)) == events
    r = page.request.get(f"{team.url}/ui/audit")
    assert r.status == 403
    r = page.request.get(f"{team.url}/ui/models/{MODEL}/promote?alias=champion&version=1")
    assert r.status == 403


def test_a_deployer_promotes_after_confirming_and_rolls_back(
    team: Team, watched: Watched, browser: object, tmp_path: Path
) -> None:
    page = watched.page
    browser_login(page, team, "dee", f"/ui/models/{MODEL}")
    start = alias_of(team)
    assert start == 2
    watched.shot("model-deployer")
    page.select_option("#promote-version", "1")
    page.click("#promote")
    page.wait_for_load_state("load")
    # nothing moves before the confirmation
    assert alias_of(team) == 2
    assert page.inner_text("#confirm-from") == "v2"
    assert page.inner_text("#confirm-to") == "v1"
    watched.shot("confirm-promote")
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert page.url == f"{team.url}/ui/models/{MODEL}"
    assert alias_of(team) == 1
    moved = audit_events(team, entity_id=f"{MODEL}@champion")[-1]
    assert (moved.actor, moved.action) == ("dee", "alias.set")
    assert dict(moved.before or {}) == {"version": 2} and dict(moved.after or {}) == {"version": 1}
    assert moved.route == "POST /ui/models/{name}/promote"

    # roll back: the alias returns to the version it pointed at before
    page.click("#rollback-champion")
    page.wait_for_load_state("load")
    assert page.inner_text("#confirm-to") == "v2"
    watched.shot("confirm-rollback")
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert alias_of(team) == 2
    back = audit_events(team, entity_id=f"{MODEL}@champion")[-1]
    assert back.actor == "dee" and back.route == "POST /ui/models/{name}/rollback"
    assert dict(back.after or {}) == {"version": 2}

    # the loop page offers the deployer its operator actions
    page.goto(f"{team.url}/ui/models/{MODEL}/loop")
    assert page.locator("#loop-rollback").count() == 1

    # an admin finds both moves on the audit page, filtered by user
    admin = browser.new_context()  # type: ignore[attr-defined]
    try:
        apage = admin.new_page()
        browser_login(apage, team, "root", "/ui/audit")
        apage.fill("input[name=user]", "dee")
        apage.click("#audit-filters button")
        apage.wait_for_load_state("load")
        rows = apage.locator("#audit-events tbody tr")
        assert rows.count() >= 2
        actors = set(apage.locator("#audit-events td.actor").all_inner_texts())
        assert actors == {"dee"}
        routes = apage.locator("#audit-events td.route").all_inner_texts()
        assert routes[:2] == [
            "POST /ui/models/{name}/rollback",
            "POST /ui/models/{name}/promote",
        ]
        apage.screenshot(path=str(watched.shots / "audit.png"), full_page=True)  # type: ignore[operator]
    finally:
        admin.close()


def test_a_deployer_asks_the_loop_for_a_retrain_after_confirming(
    team: Team, watched: Watched
) -> None:
    page = watched.page
    browser_login(page, team, "dee", f"/ui/models/{MODEL}/loop")
    state, revision = _loop_state(team)
    assert state == "idle"
    page.click("#loop-retrain")
    page.wait_for_load_state("load")
    assert _loop_state(team) == (state, revision)  # nothing before the confirmation
    page.fill("#retrain-reason", "<b>labels drifted</b>")
    watched.shot("confirm-retrain")
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert page.url == f"{team.url}/ui/models/{MODEL}/loop"
    assert _loop_state(team) == ("retraining", revision + 1)
    assert page.inner_text("#loop-state-name") == "retraining"
    newest = page.locator("#loop-events tbody tr").first
    assert "retrain: <b>labels drifted</b> (by dee)" in newest.inner_text()
    assert page.locator("#loop-retrain").count() == 0  # busy now: no second request
    event = audit_events(team, entity_type="loop")[-1]
    assert (event.actor, event.action, event.model) == ("dee", "loop.retrain", MODEL)
    assert dict(event.before or {}) == {"state": "idle", "revision": revision}
    assert event.route == "POST /ui/models/{name}/loop/retrain"


def test_writes_need_the_sessions_csrf_token_and_the_same_origin(team: Team) -> None:
    http, csrf = http_login(team, "dee")
    path = f"/ui/models/{MODEL}/promote"
    try:
        before = alias_of(team)
        without_csrf = {k: v for k, v in _promote_form(csrf, 1, before).items() if k != "csrf"}
        refused = [
            http.post(path, data=_promote_form("", 1, before)),
            http.post(path, data=_promote_form("x" * 43, 1, before)),
            http.post(path, data=without_csrf),
            http.post(
                path, data=_promote_form(csrf, 1, before), headers={"Origin": "https://evil.test"}
            ),
            http.post(
                path, data=_promote_form(csrf, 1, before), headers={"Sec-Fetch-Site": "cross-site"}
            ),
        ]
        assert [r.status_code for r in refused] == [403] * 5
        assert "CSRF token" in refused[0].text
        assert "another origin" in refused[3].text
        assert alias_of(team) == before
        # another user's CSRF token does not fit this session
        other, other_csrf = http_login(team, "root")
        other.close()
        assert http.post(path, data=_promote_form(other_csrf, 1, before)).status_code == 403
        # a stale confirmation (the alias moved meanwhile) is refused with 409
        stale = http.post(path, data=_promote_form(csrf, 1, 99))
        assert stale.status_code == 409
        # the same form with the right token, from the same origin, goes through
        ok = http.post(path, data=_promote_form(csrf, 1, before), headers={"Origin": team.url})
        assert ok.status_code == 303
        assert alias_of(team) == 1
        back = http.post(f"/ui/models/{MODEL}/rollback", data=_promote_form(csrf, 0, 1))
        assert back.status_code == 303
        assert alias_of(team) == before
    finally:
        http.close()


def test_a_deployer_limited_to_other_models_cannot_see_or_move_this_one(team: Team) -> None:
    http, csrf = http_login(team, "sam")
    try:
        assert MODEL not in http.get("/ui/models").text
        assert http.get(f"/ui/models/{MODEL}").status_code == 403
        before = alias_of(team)
        r = http.post(f"/ui/models/{MODEL}/promote", data=_promote_form(csrf, 1, before))
        assert r.status_code == 403
        assert alias_of(team) == before
    finally:
        http.close()


#: The dashboard's state-changing routes and the least role each needs (None: any session).
DASHBOARD_POSTS = {
    f"/ui/models/{MODEL}/promote": "deployer",
    f"/ui/models/{MODEL}/rollback": "deployer",
    f"/ui/models/{MODEL}/loop/retrain": "deployer",
    f"/ui/models/{MODEL}/loop/pause": "deployer",
    f"/ui/models/{MODEL}/loop/resume": "deployer",
    f"/ui/models/{MODEL}/loop/approve": "deployer",
    f"/ui/models/{MODEL}/loop/reject": "deployer",
    "/ui/logout": None,
}
RANK = {"viewer": 0, "editor": 1, "deployer": 2, "admin": 3}


def test_every_dashboard_write_lets_exactly_its_roles_in(team: Team) -> None:
    """The role matrix of the dashboard's POST routes (the API's is generated from OpenAPI,
    which does not list the mounted dashboard): each role, with a valid CSRF token."""
    wrong = []
    for user, role in (("vic", "viewer"), ("ed", "editor"), ("dee", "deployer"), ("root", "admin")):
        for path, least in DASHBOARD_POSTS.items():
            http, csrf = http_login(team, user)
            # a confirmation that no longer holds: past the role check it is a 409, so the
            # matrix changes nothing in the store
            r = http.post(path, data=_promote_form(csrf, 1, 999))
            allowed = least is None or RANK[role] >= RANK[least]
            if (r.status_code not in (401, 403)) != allowed:
                wrong.append((path, user, r.status_code))
            http.close()
    assert not wrong, wrong
    assert alias_of(team) == 2


#: Dashboard POST routes anyone may send (they open a session).
PUBLIC_POSTS = {"/login"}


def test_the_matrix_knows_every_dashboard_post_route(team: Team) -> None:
    """A new state-changing dashboard route fails here until its role is decided above."""
    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.ui import create_app

    client = Client(Settings(home=team.filled.home))
    try:
        app = create_app(client)
        posts = {r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ())}
    finally:
        client.close()
    known = {p.replace(MODEL, "{name}").removeprefix("/ui") for p in DASHBOARD_POSTS}
    assert posts == known | PUBLIC_POSTS


def test_the_audit_page_filters_pages_and_shows_html_as_text(team: Team, watched: Watched) -> None:
    from modelloop.store._sql import SqlStore

    xss_actor = "<img src=x onerror=alert(2)>"
    store = SqlStore(team.store_url)
    try:
        for i in range(60):
            store.add_audit_event(
                actor=xss_actor if i == 59 else "bulk",
                action="test.page",
                entity_type="run",
                entity_id=f"<script>alert({i})</script>",
                model="paged-model",
            )
    finally:
        store.close()
    page = watched.page
    browser_login(page, team, "root", "/ui/audit?model=paged-model")
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() == 50
    assert page.locator("#audit-events td.actor").first.inner_text() == xss_actor  # newest first
    assert page.locator("#audit-events td.entity").first.inner_text() == (
        "run <script>alert(59)</script>"
    )
    page.click("#audit-next")
    page.wait_for_load_state("load")
    assert "page=2" in page.url and "model=paged-model" in page.url
    assert rows.count() == 10
    assert page.locator("#audit-next").count() == 0
    page.goto(f"{team.url}/ui/audit?model=paged-model&since=2999-01-01")
    assert page.locator("#audit-empty").count() == 1
    page.goto(f"{team.url}/ui/audit?user=%3Cb%3Ex%3C%2Fb%3E")
    assert page.input_value("input[name=user]") == "<b>x</b>"
    assert watched.dialogs == []
