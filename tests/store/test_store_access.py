"""Users, tokens and the audit log in the store, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelloop.access import Role, TokenInfo, User
from modelloop.exceptions import Conflict, InvalidInput, NotFound
from modelloop.store._sql import SqlStore
from modelloop.store._sql import _schema as T
from modelloop.store._sql._migrate import alembic_config, current_revision

# Users, tokens and audit writes are SqlStore methods (the server's own), not the Store contract
# that HttpStore implements; over HTTP they are the access routes, tested in tests/server.
pytestmark = pytest.mark.sql_only

# -- users -------------------------------------------------------------------------------------


def test_users_are_created_read_listed_and_updated(store: SqlStore) -> None:
    assert store.has_users() is False and store.list_users() == []
    alice = store.create_user("alice", "admin", actor="root")
    bob = store.create_user("bob@example.com", Role.EDITOR, models=["m2", "m1", "m1"])
    assert alice == User("alice", Role.ADMIN, None, alice.created_at, False)
    assert bob.models == ("m1", "m2")  # sorted, deduplicated
    assert store.has_users() is True
    assert store.get_user("bob@example.com") == bob
    assert store.list_users() == [alice, bob]

    promoted = store.update_user("bob@example.com", role="deployer", actor="alice")
    assert promoted.role == Role.DEPLOYER and promoted.models == ("m1", "m2")  # scope kept
    unscoped = store.update_user("bob@example.com", models=None, actor="alice")
    assert unscoped.models is None and store.get_user("bob@example.com") == unscoped
    disabled = store.update_user("bob@example.com", disabled=True, actor="alice")
    assert disabled.disabled and store.get_user("bob@example.com").disabled
    assert store.update_user("bob@example.com", disabled=True) == disabled  # nothing to change

    actions = [(e.action, e.actor) for e in store.list_audit_events(entity_type="user")]
    assert actions == [
        ("user.create", "root"),
        ("user.create", "local"),
        ("user.update", "alice"),
        ("user.update", "alice"),
        ("user.disable", "alice"),
    ]
    last = store.list_audit_events(entity_type="user")[-1]
    assert last.before is not None and last.after is not None
    assert (last.before["disabled"], last.after["disabled"]) == (False, True)


def test_user_input_is_checked(store: SqlStore) -> None:
    store.create_user("alice", "viewer")
    with pytest.raises(Conflict, match="'alice' already exists"):
        store.create_user("alice", "admin")
    for bad in ("", " x", "a/b", "../etc", "x" * 129, "a b"):
        with pytest.raises(InvalidInput, match="invalid user name"):
            store.create_user(bad, "viewer")
    with pytest.raises(InvalidInput, match="unknown role 'root'"):
        store.create_user("bob", "root")
    with pytest.raises(InvalidInput, match="admin cannot be limited"):
        store.create_user("bob", "admin", models=["m"])
    with pytest.raises(InvalidInput, match="invalid model name"):
        store.create_user("bob", "editor", models=["../m"])
    with pytest.raises(InvalidInput, match="at least one model"):
        store.create_user("bob", "editor", models=[])
    with pytest.raises(NotFound, match="user 'nobody' does not exist"):
        store.get_user("nobody")
    with pytest.raises(NotFound):
        store.update_user("nobody", role="admin")
    store.update_user("alice", models=["m"])
    with pytest.raises(InvalidInput, match="an admin cannot be"):
        store.update_user("alice", role="admin")  # the scope would stay
    assert store.update_user("alice", role="admin", models=None).role == Role.ADMIN
    assert [u.name for u in store.list_users()] == ["alice"]  # nothing half-written


# -- tokens ------------------------------------------------------------------------------------


def test_token_lifecycle(store: SqlStore, store_url: str) -> None:
    store.create_user("bob", "editor", models=["m1"])
    info, token = store.create_token("bob", "laptop", actor="root")
    assert token.startswith(f"mlt_{info.token_id}_") and len(token) > 60
    assert info == TokenInfo(info.token_id, "bob", "laptop", info.created_at)
    assert store.list_tokens() == [info] and store.list_tokens("bob") == [info]
    assert store.get_token(info.token_id) == info

    user = store.authenticate(token)
    assert user is not None and (user.name, user.role, user.models) == ("bob", "editor", ("m1",))
    assert store.authenticate(token) == user  # from the verified cache now
    assert store.get_token(info.token_id).last_used_at is not None

    # the right id with a wrong secret: refused, whether or not the id was verified before
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert store.authenticate(wrong) is None
    other = SqlStore(store_url)  # a second process's view: nothing cached
    try:
        assert other.authenticate(wrong) is None
        assert other.authenticate(token) == user
        for junk in ("", "Bearer " + token, token + "x", "mlt_", "x" * 80, f"mlt_{'0' * 16}_"):
            assert other.authenticate(junk) is None

        # disabling the user stops its tokens at once, in every store object
        store.update_user("bob", disabled=True)
        assert store.authenticate(token) is None and other.authenticate(token) is None
        with pytest.raises(Conflict, match="'bob' is disabled"):
            store.create_token("bob")
        store.update_user("bob", disabled=False)
        assert other.authenticate(token) == user

        # revocation too
        revoked = store.revoke_token(info.token_id, actor="root")
        assert revoked.revoked_at is not None and not revoked.active
        assert other.authenticate(token) is None and store.authenticate(token) is None
        assert store.revoke_token(info.token_id) == revoked  # idempotent, no second event
    finally:
        other.close()

    events = store.list_audit_events(entity_type="token")
    assert [(e.action, e.actor) for e in events] == [
        ("token.create", "root"),
        ("token.revoke", "root"),
    ]
    assert events[1].before == {**events[1].after, "revoked": False}
    with pytest.raises(NotFound):
        store.create_token("nobody")
    with pytest.raises(NotFound):
        store.revoke_token("0123456789abcdef")

    # guessing at an id: wrong secrets are refused (after a few, without scrypt: see
    # test_wrong_secrets_for_an_unverified_id_stop_costing_scrypt), and the right one still
    # works for a store object that was not guessed at
    _, token2 = store.create_token("bob", "second")
    third = SqlStore(store_url)
    try:
        wrong2 = token2[:-4] + ("AAAA" if not token2.endswith("AAAA") else "BBBB")
        assert [third.authenticate(wrong2) for _ in range(5)] == [None] * 5
        assert store.authenticate(token2) is not None
    finally:
        third.close()


def _all_rows_as_text(url: str) -> str:
    """Every row of every table, as the database renders it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            parts = []
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    parts.append(repr(tuple(row)))
            return "\n".join(parts)
    finally:
        engine.dispose()


def test_the_plaintext_is_never_stored(store: SqlStore, store_url: str, tmp_path: Path) -> None:
    store.create_user("bob", "viewer")
    tokens = [store.create_token("bob", f"t{i}")[1] for i in range(3)]
    assert all(store.authenticate(t) is not None for t in tokens)
    store.revoke_token(tokens[0].split("_")[1])
    secrets_ = [t.split("_", 2)[2] for t in tokens]
    dump = _all_rows_as_text(store_url)
    assert "scrypt$" in dump  # the hashes are there...
    for token, secret in zip(tokens, secrets_, strict=True):
        assert token not in dump and secret not in dump  # ...never a token or its secret
    if store.dialect == "sqlite":  # the file itself, WAL included
        db = Path(store_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert b"scrypt$" in raw
        for secret in secrets_:
            assert secret.encode() not in raw


# -- audit -------------------------------------------------------------------------------------


def test_audit_events_are_filtered_by_user_model_and_time(store: SqlStore) -> None:
    a = store.add_audit_event(
        actor="alice", action="alias.set", entity_type="alias", entity_id="m1@champion",
        before={"version": 1}, after={"version": 2}, route="PUT /api/v1/models/{name}/aliases",
    )  # fmt: skip
    assert (a.model, a.route, a.before, a.after) == (
        "m1",
        "PUT /api/v1/models/{name}/aliases",
        {"version": 1},
        {"version": 2},
    )
    time.sleep(0.01)
    cut = int(time.time() * 1000)
    time.sleep(0.01)
    b = store.add_audit_event(actor="bob", action="x.y", entity_type="model_version",
                              entity_id="m2/3")  # fmt: skip
    c = store.add_audit_event(actor="alice", action="run.create", entity_type="run",
                              entity_id="abc", model="m2")  # fmt: skip
    d = store.add_audit_event(actor="bob", action="note", entity_type="thing", entity_id="t")
    assert (b.model, c.model, d.model) == ("m2", "m2", None)
    assert store.list_audit_events() == [a, b, c, d]
    assert store.list_audit_events(actor="alice") == [a, c]
    assert store.list_audit_events(model="m2") == [b, c]
    assert store.list_audit_events(model="m2", actor="bob") == [b]
    assert store.list_audit_events(since=cut) == [b, c, d]
    assert store.list_audit_events(since=cut, limit=2) == [c, d]
    assert store.list_audit_events(entity_type="run", entity_id="abc") == [c]
    with pytest.raises(InvalidInput, match="actor"):
        store.add_audit_event(actor="", action="a", entity_type="t", entity_id="i")


def test_registry_events_are_filed_under_their_model(store: SqlStore) -> None:
    store.create_registered_model("m1", actor="alice")
    exp = store.create_experiment("e")
    run = store.create_run(exp.experiment_id, name="r", user="alice")
    store.create_model_version("m1", source="runs:/x/model", run_id=run.run_id, actor="alice")
    store.set_alias("m1", "champion", 1, actor="bob")
    store.create_registered_model("m2", actor="bob")
    events = store.list_audit_events(model="m1")
    assert [(e.action, e.actor, e.model) for e in events] == [
        ("registered_model.create", "alice", "m1"),
        ("model_version.create", "alice", "m1"),
        ("alias.set", "bob", "m1"),
    ]
    assert [e.action for e in store.list_audit_events(actor="bob")] == [
        "alias.set",
        "registered_model.create",
    ]


def _raw_engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def test_audit_rows_cannot_be_changed_or_deleted_even_in_raw_sql(
    store: SqlStore, store_url: str
) -> None:
    store.create_registered_model("m", actor="alice")
    store.add_audit_event(actor="alice", action="a", entity_type="t", entity_id="i")
    before = store.list_audit_events()
    engine = _raw_engine(store_url)
    statements = [
        "UPDATE audit_events SET actor = 'mallory'",
        "UPDATE audit_events SET after = NULL WHERE event_id = 1",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE event_id = 2",
    ]
    if store.dialect == "postgresql":
        statements.append("TRUNCATE audit_events")
    try:
        for statement in statements:
            with (
                pytest.raises(sa.exc.DatabaseError, match="append-only"),
                engine.begin() as conn,
            ):
                conn.execute(sa.text(statement))
        with engine.begin() as conn:  # appending still works
            conn.execute(
                T.audit_events.insert(),
                {"timestamp": 1, "actor": "x", "action": "a", "entity_type": "t", "entity_id": "i"},
            )
    finally:
        engine.dispose()
    assert store.list_audit_events()[:2] == before


def test_no_store_method_writes_audit_rows_except_by_inserting() -> None:
    """Every SQL statement the store's modules build against audit_events is an insert or a
    select: no UPDATE or DELETE of the table appears in them (the triggers back this up)."""
    import inspect

    from modelloop.store._sql import _access, _core, _loop, _monitoring, _registry, _tracking

    for module in (_access, _core, _loop, _monitoring, _registry, _tracking):
        source = inspect.getsource(module)
        for needle in ("update(T.audit_events", "delete(T.audit_events",
                       "audit_events.update", "audit_events.delete", "UPDATE audit_events",
                       "DELETE FROM audit_events"):  # fmt: skip
            assert needle not in source, (module.__name__, needle)
    public = [n for n in dir(SqlStore) if "audit" in n and not n.startswith("_")]
    assert sorted(public) == ["add_audit_event", "list_audit_events"]


def test_a_0004_database_upgrades_and_files_old_registry_events(store_url: str) -> None:
    from alembic import command

    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0004")
        with engine.begin() as conn:
            assert current_revision(conn) == "0004"
            rows = [
                ("registered_model", "flights"),
                ("model_version", "flights/2"),
                ("alias", "flights@champion"),
                ("run", "abc"),
            ]
            for i, (entity_type, entity_id) in enumerate(rows):
                conn.execute(
                    sa.text(
                        "INSERT INTO audit_events (timestamp, actor, action, entity_type, "
                        "entity_id) VALUES (:t, 'old', 'a', :et, :ei)"
                    ),
                    {"t": i, "et": entity_type, "ei": entity_id},
                )
    finally:
        engine.dispose()
    store = SqlStore(store_url)
    try:
        events = store.list_audit_events()
        assert [e.model for e in events] == ["flights", "flights", "flights", None]
        assert [e.entity_id for e in store.list_audit_events(model="flights")] == [
            "flights",
            "flights/2",
            "flights@champion",
        ]
        assert store.has_users() is False
    finally:
        store.close()


def test_0005_downgrades_to_0004_and_upgrades_again(store: SqlStore) -> None:
    from alembic import command

    from modelloop.store._sql import HEAD_REVISION

    store.create_user("alice", "admin")
    store.create_registered_model("m", actor="alice")
    with store._engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    with store._engine.begin() as conn:
        assert current_revision(conn) == "0004"
        inspector = sa.inspect(conn)
        assert not {"users", "api_tokens"} & set(inspector.get_table_names())
        columns = {c["name"] for c in inspector.get_columns("audit_events")}
        assert not {"route", "model_name"} & columns
        conn.execute(sa.text("UPDATE audit_events SET actor = 'x' WHERE actor = 'nobody'"))
    assert store.upgrade() == HEAD_REVISION
    assert store.list_users() == []
    assert [e.model for e in store.list_audit_events()] == [None, "m"]  # user.create, model
