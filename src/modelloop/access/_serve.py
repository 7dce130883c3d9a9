"""The model server's side of one identity: checking a bearer token presented to
``modelloop serve`` against the users of the metadata store (directly, or through the
control-plane server when the store is one)."""

from __future__ import annotations

from typing import Any

from modelloop.access._records import User
from modelloop.access._roles import Role
from modelloop.exceptions import InvalidInput, Unauthorized
from modelloop.serving._auth import Identity, UserCheck

__all__ = ["identity_of", "server_user_check", "store_user_check", "user_check_for"]


def identity_of(name: str, role: Role, models: Any) -> Identity:
    """The serving identity of a user: deployers and admins may call the admin routes
    (routing, reload), viewers and editors may predict."""
    return Identity(
        name=name,
        role="admin" if role >= Role.DEPLOYER else "predict",
        models=None if models is None else frozenset(models),
    )


def store_user_check(store: Any) -> UserCheck:
    """A check of tokens against a ``SqlStore``'s users (one read per call; see
    ``SqlStore.authenticate``)."""

    def check(token: str) -> Identity | None:
        user: User | None = store.authenticate(token)
        return None if user is None else identity_of(user.name, user.role, user.models)

    return check


def server_user_check(url: str, *, verify: bool | str = True) -> UserCheck:
    """A check of tokens by asking the control-plane server at ``url`` who they are.

    Refuses (``InvalidInput``) a server in open mode: it would call anyone an admin."""
    from modelloop.access._remote import AccessClient

    client = AccessClient(url, None, verify=verify)
    try:
        client.whoami()
    except Unauthorized:
        pass  # users exist: the server checks tokens
    else:
        client.close()
        raise InvalidInput(
            f"the server at {url} has no users (open mode): it cannot vouch for tokens; add a "
            "user there first, or serve without --users"
        )

    def check(token: str) -> Identity | None:
        try:
            me = client.whoami(as_token=token)
        except Unauthorized:
            return None
        return identity_of(str(me["name"]), Role.parse(me["role"]), me.get("models"))

    return check


def user_check_for(store_url: str, mode: bool | None) -> UserCheck | None:
    """The user check ``modelloop serve`` uses for the store at ``store_url``: with ``mode``
    None, on when the store has users; True, always; False, never."""
    if mode is False:
        return None
    from modelloop.access._backend import is_server_url

    if is_server_url(store_url):
        try:
            return server_user_check(store_url)
        except InvalidInput:
            if mode:
                raise
            return None
    from modelloop.store._sql import SqlStore

    store = SqlStore(store_url)
    if mode is None and not store.has_users():
        store.close()
        return None
    return store_user_check(store)
