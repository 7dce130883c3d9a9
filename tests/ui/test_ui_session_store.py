"""Dashboard sessions in the store's database: only a hash of the id is kept, and a session
ends when it expires, is closed, or its user is disabled."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modelloop.access import Role, parse_token
from modelloop.store._sql import SqlStore
from modelloop.ui._auth import Sessions


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = SqlStore(store_url)
    s.upgrade()
    yield s
    s.close()


def _user(store: SqlStore, name: str, role: str = "deployer") -> str:
    store.create_user(name, role, actor="operator")
    token = store.create_token(name, "sessions", actor="operator")[1]
    parsed = parse_token(token)
    assert parsed is not None
    return parsed.token_id


def test_a_session_names_its_user_and_keeps_no_id_in_clear(store: SqlStore) -> None:
    import sqlalchemy as sa

    sessions = Sessions(store)
    sessions.create_table()
    sessions.create_table()  # idempotent: every server start calls it
    session_id, csrf = sessions.open("dee", _user(store, "dee"))
    found = sessions.get(session_id)
    assert found is not None
    assert (found.principal.name, found.principal.role, found.csrf) == ("dee", Role.DEPLOYER, csrf)
    rows = store._read(
        lambda c: c.execute(sa.text("SELECT * FROM modelloop_server_ui_sessions")).all()
    )
    assert len(rows) == 1 and session_id not in [str(v) for v in rows[0]]
    assert sessions.get(session_id + "x") is None
    assert sessions.get("") is None
    sessions.close(session_id)
    assert sessions.get(session_id) is None


def test_a_session_ends_when_it_expires_or_its_user_is_disabled(store: SqlStore) -> None:
    short = Sessions(store, ttl_ms=50)
    short.create_table()
    token_id = _user(store, "vic", "viewer")
    expiring, _ = short.open("vic", token_id)
    kept, _ = Sessions(store).open("vic", token_id)
    time.sleep(0.1)
    assert short.get(expiring) is None
    assert short.get(kept) is not None  # its own expiry is hours away
    store.update_user("vic", disabled=True, actor="operator")
    assert short.get(kept) is None
