"""The loop page's Pause…/Resume… and Approve…/Reject… buttons, on a real ``modelloop server``
with users, clicked in Chromium behind their confirmation pages, checked in the store and the
audit log; a viewer sees none of them and a forged POST from one is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ui_auth_support import MODEL, Team, audit_events, browser_login, csrf_in, start_team
from ui_support import Watched

pytest.importorskip("fastapi")

OPERATIONS = ("pause", "resume", "approve", "reject")


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    with start_team(tmp_path_factory.mktemp("uiloopops")) as running:
        yield running


def _loop(team: Team) -> Any:
    from modelloop.store._sql import SqlStore

    store = SqlStore(team.store_url)
    try:
        return store.get_loop_state(MODEL)
    finally:
        store.close()


def _await_approval(team: Team) -> int:
    """Put the loop where the controller stops for a person before a rollout."""
    from modelloop.store._sql import SqlStore

    store = SqlStore(team.store_url)
    try:
        state = store.get_loop_state(MODEL)
        assert state is not None
        new, _ = store.transition_loop(
            MODEL,
            expected_revision=state.revision,
            state="awaiting_approval",
            data={
                "memo": {},
                "challenger": 1,
                "approval": "rollout",
                "evidence": {"metric": "accuracy", "challenger_value": 0.93},
            },
            kind="approval",
            message="v1 awaits approval before its rollout",
        )
        return new.revision
    finally:
        store.close()


def _confirm(page: Any, button: str, reason: str) -> None:
    page.click(button)
    page.wait_for_load_state("load")
    page.fill("#loop-reason", reason)
    page.click("#confirm")
    page.wait_for_load_state("load")


def test_a_viewer_sees_no_loop_buttons_and_a_forged_post_is_refused(
    team: Team, watched: Watched
) -> None:
    page = watched.page
    _await_approval(team)
    browser_login(page, team, "vic", f"/ui/models/{MODEL}/loop")
    assert page.inner_text("#loop-state-name") == "awaiting_approval"
    assert page.locator("#loop-operator, #loop-pause, #loop-approve, #loop-reject").count() == 0
    csrf = csrf_in(page.content())
    before = _loop(team)
    for op in OPERATIONS:
        r = page.request.post(
            f"{team.url}/ui/models/{MODEL}/loop/{op}",
            form={"csrf": csrf, "expected": str(before.revision), "reason": "forged"},
            max_redirects=0,
        )
        assert r.status == 403, (op, r.status)
        assert page.request.get(f"{team.url}/ui/models/{MODEL}/loop/{op}").status == 403
    assert _loop(team).revision == before.revision
    assert audit_events(team, entity_type="loop") == []


def test_a_deployer_pauses_then_resumes_the_loop_by_clicks(team: Team, watched: Watched) -> None:
    page = watched.page
    browser_login(page, team, "dee", f"/ui/models/{MODEL}/loop")
    revision = _loop(team).revision
    page.click("#loop-pause")
    page.wait_for_load_state("load")
    assert _loop(team).revision == revision  # nothing before the confirmation
    assert "Pause the loop of" in page.inner_text("#confirm-heading")
    page.fill("#loop-reason", "<b>label feed down</b>")
    watched.shot("confirm-pause")
    page.click("#confirm")
    page.wait_for_load_state("load")
    assert page.url == f"{team.url}/ui/models/{MODEL}/loop"
    state = _loop(team)
    assert state.revision == revision + 1
    assert (state.data["paused"]["by"], state.data["paused"]["reason"]) == (
        "dee",
        "<b>label feed down</b>",
    )
    assert "<b>label feed down</b>" in page.inner_text("#loop-paused")  # shown as text
    assert page.locator("#loop-pause").count() == 0
    assert page.locator("#loop-retrain").count() == 0  # no retrain request while paused
    event = audit_events(team, entity_type="loop")[-1]
    assert (event.actor, event.action, event.model) == ("dee", "loop.pause", MODEL)
    assert (event.before["paused"], event.after["paused"]) == (False, True)
    assert event.route == "POST /ui/models/{name}/loop/pause"

    _confirm(page, "#loop-resume", "feed back")
    state = _loop(team)
    assert "paused" not in state.data and state.revision == revision + 2
    assert page.locator("#loop-paused").count() == 0 and page.locator("#loop-pause").count() == 1
    newest = page.locator("#loop-events tbody tr").first
    assert "resumed by dee: feed back" in newest.inner_text()
    event = audit_events(team, entity_type="loop")[-1]
    assert (event.actor, event.action) == ("dee", "loop.resume")


def test_a_deployer_approves_then_rejects_a_waiting_challenger(
    team: Team, watched: Watched
) -> None:
    page = watched.page
    _await_approval(team)
    browser_login(page, team, "dee", f"/ui/models/{MODEL}/loop")
    assert "Awaiting approval" in page.inner_text("#loop-awaiting")
    page.click("#loop-approve")
    page.wait_for_load_state("load")
    assert "challenger_value" in page.inner_text("#confirm-evidence")
    page.fill("#loop-reason", "looks right")
    page.click("#confirm")
    page.wait_for_load_state("load")
    state = _loop(team)
    assert state.state == "approved" and state.data["approved"]["by"] == "dee"
    assert page.locator("#loop-approve").count() == 0
    event = audit_events(team, entity_type="loop")[-1]
    assert (event.actor, event.action, event.after["state"]) == ("dee", "loop.approve", "approved")

    _await_approval(team)
    page.reload()
    _confirm(page, "#loop-reject", "not this week")
    state = _loop(team)
    assert state.state == "rolling_back"
    assert state.data["reason"] == "rejected by dee before its rollout: not this week"
    event = audit_events(team, entity_type="loop")[-1]
    assert (event.actor, event.action) == ("dee", "loop.reject")
    # a stale confirmation (the loop moved on since the page was shown) is refused
    page.go_back()
    page.go_back()
    r = page.request.post(
        f"{team.url}/ui/models/{MODEL}/loop/reject",
        form={"csrf": csrf_in(page.content()), "expected": "1", "reason": "again"},
        max_redirects=0,
    )
    assert r.status == 409
    watched.failed_requests.clear()
    watched.console_errors.clear()
