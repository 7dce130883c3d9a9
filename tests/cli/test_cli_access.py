"""``modelloop users``, ``tokens`` and ``audit`` directly on a SQL store (SQLite file in the
home, and PostgreSQL through MODELLOOP_STORE_URL), in-process with Typer's runner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelloop.cli import app
from modelloop.cli._access import parse_since
from modelloop.exceptions import InvalidInput
from modelloop.store._sql import SqlStore

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str) -> dict:
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_users_tokens_and_audit_on_the_local_store(home: Path) -> None:
    assert ok("users", "add", "alice", "--role", "admin")["user"]["role"] == "admin"
    bob = ok("users", "add", "bob", "--role", "editor", "--model", "m2", "--model", "m1")["user"]
    assert bob == {**bob, "name": "bob", "models": ["m1", "m2"], "disabled": False}
    assert [u["name"] for u in ok("users", "list")["users"]] == ["alice", "bob"]

    created = ok("tokens", "create", "--user", "bob", "--description", "laptop")
    token, info = created["token"], created["info"]
    assert token.startswith(f"mlt_{info['token_id']}_") and info["description"] == "laptop"
    store = SqlStore(f"sqlite:///{home / 'modelloop.db'}")
    try:
        user = store.authenticate(token)
        assert user is not None and user.name == "bob"
        listed = ok("tokens", "list", "--user", "bob")["tokens"]
        assert [t["token_id"] for t in listed] == [info["token_id"]]
        assert token not in json.dumps(listed)

        # plain output: the token alone on stdout, the warning on stderr
        res = invoke("tokens", "create", "--user", "alice")
        assert res.exit_code == 0, res.output
        assert res.stdout.strip().startswith("mlt_") and len(res.stdout.strip().split()) == 1
        assert "not shown again" in res.stderr

        assert ok("users", "set-role", "bob", "deployer")["user"]["models"] is None
        assert ok("users", "disable", "bob")["user"]["disabled"] is True
        assert store.authenticate(token) is None
        assert ok("users", "enable", "bob")["user"]["disabled"] is False
        assert store.authenticate(token) is not None
        revoked = ok("tokens", "revoke", info["token_id"])["token"]
        assert revoked["revoked_at"] is not None and store.authenticate(token) is None
    finally:
        store.close()

    events = ok("audit", "list", "--user", "tester")["events"]  # MODELLOOP_USER of the home
    assert [e["action"] for e in events] == [
        "user.create", "user.create", "token.create", "token.create", "user.update",
        "user.disable", "user.enable", "token.revoke",
    ]  # fmt: skip
    assert ok("audit", "list", "--user", "nobody")["events"] == []
    assert len(ok("audit", "list", "--since", "1h", "--limit", "2")["events"]) == 2
    assert ok("audit", "list", "--since", "2999-01-01")["events"] == []
    res = invoke("audit", "list", "--user", "tester")
    assert res.exit_code == 0 and "token.revoke" in res.stdout and "user.create" in res.stdout


def test_audit_list_by_model(home: Path) -> None:
    store = SqlStore(f"sqlite:///{home / 'modelloop.db'}")
    try:
        store.add_audit_event(actor="a", action="alias.set", entity_type="alias",
                              entity_id="m1@champion", after={"version": 2})  # fmt: skip
        store.add_audit_event(actor="b", action="alias.set", entity_type="alias",
                              entity_id="m2@champion", after={"version": 1})  # fmt: skip
    finally:
        store.close()
    events = ok("audit", "list", "--model", "m2")["events"]
    assert [(e["actor"], e["entity_id"], e["after"]) for e in events] == [
        ("b", "m2@champion", {"version": 1})
    ]


def test_errors_have_their_exit_codes(home: Path) -> None:
    ok("users", "add", "alice", "--role", "viewer")
    cases = [
        (("users", "add", "alice", "--role", "viewer"), 4, "already exists"),
        (("users", "add", "x/y", "--role", "viewer"), 2, "invalid user name"),
        (("users", "add", "carol", "--role", "admin", "--model", "m"), 2, "admin cannot"),
        (("users", "set-role", "nobody", "editor"), 3, "'nobody' does not exist"),
        (("tokens", "create", "--user", "nobody"), 3, "'nobody' does not exist"),
        (("tokens", "revoke", "0123456789abcdef"), 3, "does not exist"),
        (("audit", "list", "--since", "yesterday"), 2, "--since 'yesterday'"),
    ]
    for args, code, words in cases:
        res = invoke(*args)
        assert res.exit_code == code, (args, res.output)
        assert words in res.stderr, (args, res.stderr)
    res = invoke("users", "add", "dave", "--role", "root")
    assert res.exit_code == 2 and "root" in res.output  # Typer refuses the choice


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("30m", now=now) == int((now - 1800) * 1000)
    assert parse_since("1h", now=now) == int((now - 3600) * 1000)
    assert parse_since("2d", now=now) == int((now - 2 * 86400) * 1000)
    assert parse_since("1w", now=now) == int((now - 7 * 86400) * 1000)
    assert parse_since("1.5h", now=now) == int((now - 5400) * 1000)
    assert parse_since("2026-12-01T00:00:00+00:00") == 1796083200000
    assert abs(parse_since("0s") - time.time() * 1000) < 60_000
    for bad in ("", "h", "-1h", "1y", "yesterday"):
        with pytest.raises(InvalidInput):
            parse_since(bad)


@pytest.mark.postgres
def test_the_cli_on_postgresql(home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_STORE_URL", pg_url)
    ok("users", "add", "alice", "--role", "deployer", "--model", "m1")
    token = ok("tokens", "create", "--user", "alice")["token"]
    store = SqlStore(pg_url)
    try:
        user = store.authenticate(token)
        assert user is not None and user.models == ("m1",)
        ok("tokens", "revoke", token.split("_")[1])
        assert store.authenticate(token) is None
    finally:
        store.close()
    assert [e["action"] for e in ok("audit", "list")["events"]] == [
        "user.create",
        "token.create",
        "token.revoke",
    ]
