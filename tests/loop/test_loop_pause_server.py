"""Pause, resume, approve and reject through a real ``modelloop server`` process (SQLite and
PostgreSQL): the client's HttpStore and the ``modelloop loop`` CLI with ``MODELLOOP_STORE_URL``,
the deployer role per model, the authenticated user in the loop's event and the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelloop.exceptions import Conflict, Forbidden, NotFound
from modelloop.loop._operator import approve_loop, operate, pause_loop, reject_loop
from modelloop.store._http import HttpStore
from modelloop.store._sql import SqlStore

pytest.importorskip("fastapi")

MODEL = "bc"
USERS = {"dee": ("deployer", None), "vic": ("viewer", None), "sam": ("deployer", ["other"])}


@pytest.fixture
def plane(server_launcher: Any, store_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = SqlStore(store_url)
    tokens = {}
    for name, (role, models) in USERS.items():
        store.create_user(name, role, models=models, actor="operator")
        tokens[name] = store.create_token(name, "loop test", actor="operator")[1]
    store.transition_loop(
        MODEL, expected_revision=0, state="idle", data={}, kind="init", message="created"
    )
    running = server_launcher.start(store_url, tmp_path / "artifacts", tmp_path / "home")
    try:
        yield {"url": running.url, "tokens": tokens, "store": store}
    finally:
        server_launcher.stop(running)
        store.close()


def test_the_routes_record_the_authenticated_user_and_check_the_role(plane) -> None:  # type: ignore[no-untyped-def]
    url, tokens, store = plane["url"], plane["tokens"], plane["store"]
    dee = HttpStore(url, token=tokens["dee"])
    try:
        # the user a client claims is not the one recorded: the token's is
        event = pause_loop(dee, MODEL, user="someone-else", reason="freeze")
        assert (event.kind, event.evidence["user"]) == ("pause", "dee")
        state = store.get_loop_state(MODEL)
        assert state is not None and state.data["paused"]["by"] == "dee"
        audit = store.list_audit_events(entity_type="loop")[-1]
        assert (audit.actor, audit.action, audit.entity_id) == ("dee", "loop.pause", MODEL)
        assert audit.before is not None and audit.after is not None
        assert (audit.before["paused"], audit.after["paused"]) == (False, True)
        assert audit.route == "POST /api/v1/loop/states/{model_name}/pause"
        with pytest.raises(Conflict, match="not awaiting approval"):
            approve_loop(dee, MODEL, user="dee")
        with pytest.raises(Conflict, match="moved on"):
            operate(dee, MODEL, "resume", user="dee", expected_revision=0)
        with pytest.raises(NotFound, match="no loop has run"):
            pause_loop(dee, "nothing-here", user="dee")
    finally:
        dee.close()
    revision = store.get_loop_state(MODEL).revision  # type: ignore[union-attr]
    for who in ("vic", "sam"):  # a viewer; a deployer of other models only
        http = HttpStore(url, token=tokens[who])
        try:
            with pytest.raises(Forbidden):
                operate(http, MODEL, "resume", user=who)
            with pytest.raises(Forbidden):
                reject_loop(http, MODEL, user=who)
        finally:
            http.close()
    assert store.get_loop_state(MODEL).revision == revision  # type: ignore[union-attr]
    assert [e.action for e in store.list_audit_events(entity_type="loop")] == ["loop.pause"]


def test_the_cli_works_through_the_server(
    plane: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelloop.cli import app

    monkeypatch.setenv("MODELLOOP_HOME", str(tmp_path / "client-home"))
    monkeypatch.setenv("MODELLOOP_STORE_URL", plane["url"])
    monkeypatch.setenv("MODELLOOP_TOKEN", plane["tokens"]["dee"])
    monkeypatch.delenv("MODELLOOP_ARTIFACT_ROOT", raising=False)
    runner = CliRunner()
    paused = runner.invoke(app, ["loop", "pause", MODEL, "--reason", "over http"])
    assert paused.exit_code == 0, paused.output
    assert "paused by dee: over http" in paused.output
    resumed = runner.invoke(app, ["loop", "resume", MODEL])
    assert resumed.exit_code == 0, resumed.output
    refused = runner.invoke(app, ["loop", "approve", MODEL])
    assert refused.exit_code == Conflict.exit_code and "not awaiting approval" in refused.output
    events = plane["store"].list_loop_events(MODEL)
    assert [(e.kind, e.evidence.get("user")) for e in events] == [
        ("init", None),
        ("pause", "dee"),
        ("resume", "dee"),
    ]
