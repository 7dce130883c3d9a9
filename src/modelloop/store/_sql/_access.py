"""Users, API tokens and free-form audit events (the store side of ``modelloop.access``).

Every change of a user or token writes its audit event in the same transaction, naming who made
it (``actor``) and, through the server, the route. Tokens are checked by id on every call, so a
revoked token or a disabled user fails the next request; scrypt runs once per token and process
(see ``modelloop.access._tokens``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop._names import check_model_name
from modelloop.access._records import TokenInfo, User
from modelloop.access._roles import Role
from modelloop.access._tokens import (
    VerifiedCache,
    hash_secret,
    new_token,
    parse_token,
    verify_secret,
)
from modelloop.exceptions import Conflict, InvalidInput, ModelloopError, NotFound
from modelloop.store._records import AuditEvent
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import check_text, now_ms
from modelloop.store._sql._registry import RegistryMixin, audit_event

__all__ = ["AccessMixin", "check_user_name"]

logger = logging.getLogger("modelloop.access")

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,127}")
#: ``last_used_at`` is written at most this often per token (ms): a write per request would
#: serialise every request on SQLite.
LAST_USED_RESOLUTION_MS = 60_000
_MAX_DESCRIPTION = 1000


def check_user_name(name: Any) -> str:
    """``name`` if it is a valid user name: a letter or digit, then up to 127 letters, digits
    and ``_ . @ + -`` (an e-mail address fits)."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid user name {name!r}: use 1-128 letters, digits, '_', '.', '@', '+', '-', "
            "starting with a letter or digit"
        )
    return name


def _check_models(models: Sequence[str] | None, role: Role) -> tuple[str, ...] | None:
    if models is None:
        return None
    if isinstance(models, str) or not isinstance(models, Sequence):
        raise InvalidInput(f"models must be a list of model names, got {models!r}")
    if role == Role.ADMIN:
        raise InvalidInput("an admin cannot be limited to some models; give no models")
    names = tuple(sorted({check_model_name(m) for m in models}))
    if not names:
        raise InvalidInput("models must name at least one model (or be omitted for every model)")
    return names


def _user(row: Any) -> User:
    return User(
        name=row.name,
        role=Role(row.role),
        models=None if row.models is None else tuple(row.models),
        created_at=row.created_at,
        disabled=bool(row.disabled),
    )


def _user_dict(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role.value,
        "models": None if user.models is None else list(user.models),
        "disabled": user.disabled,
    }


def _token(row: Any) -> TokenInfo:
    return TokenInfo(
        token_id=row.token_id,
        user=row.user_name,
        description=row.description,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _token_dict(info: TokenInfo) -> dict[str, Any]:
    return {
        "token_id": info.token_id,
        "user": info.user,
        "description": info.description,
        "revoked": info.revoked_at is not None,
    }


class AccessMixin(RegistryMixin):
    """Users, tokens and audit events of the control plane."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._verified = VerifiedCache()
        self._users_seen = False

    # -- users -------------------------------------------------------------------------------

    def has_users(self) -> bool:
        """Whether any user exists (then every server route needs a token). Users are never
        deleted, so once True the answer is kept without asking the database again."""
        if self._users_seen:
            return True
        found = self._read(
            lambda conn: conn.execute(sa.select(T.users.c.name).limit(1)).first() is not None
        )
        if found:
            self._users_seen = True
        return found

    def create_user(
        self,
        name: str,
        role: Role | str,
        *,
        models: Sequence[str] | None = None,
        actor: str = "local",
        route: str | None = None,
    ) -> User:
        """Add a user; ``Conflict`` if the name is taken. ``models`` limits a viewer, editor or
        deployer to those registered models (None: every model)."""
        name = check_user_name(name)
        role = Role.parse(role)
        scope = _check_models(models, role)
        actor = check_text(actor, "actor")
        now = now_ms()
        user = User(name=name, role=role, models=scope, created_at=now, disabled=False)
        u = T.users
        stmt = (
            self._insert(u)
            .values(
                name=name,
                role=role.value,
                models=None if scope is None else list(scope),
                created_at=now,
                updated_at=now,
                disabled=False,
            )
            .on_conflict_do_nothing(index_elements=[u.c.name])
            .returning(u.c.name)
        )

        def tx(conn: Connection) -> User:
            if conn.execute(stmt).first() is None:
                raise Conflict(f"user {name!r} already exists")
            self._audit(
                conn,
                actor=actor,
                action="user.create",
                entity_type="user",
                entity_id=name,
                after=_user_dict(user),
                at=now,
                route=route,
            )
            return user

        return self._write(tx)

    def _user_row(self, conn: Connection, name: str, *, lock: bool = False) -> Any:
        stmt = sa.select(T.users).where(T.users.c.name == name)
        if lock and self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(f"user {name!r} does not exist")
        return row

    def get_user(self, name: str) -> User:
        """The user named ``name``, or ``NotFound``."""
        name = check_user_name(name)
        return self._read(lambda conn: _user(self._user_row(conn, name)))

    def list_users(self) -> list[User]:
        """Every user, disabled ones included, by name."""
        stmt = sa.select(T.users).order_by(T.users.c.name)
        return self._read(lambda conn: [_user(r) for r in conn.execute(stmt)])

    def update_user(
        self,
        name: str,
        *,
        role: Role | str | None = None,
        models: Sequence[str] | EllipsisType | None = ...,
        disabled: bool | None = None,
        actor: str = "local",
        route: str | None = None,
    ) -> User:
        """Change a user's role, model scope (``None``: every model; leave out to keep it) or
        disabled flag, atomically; the audit event holds before and after. Disabling stops the
        user's tokens at once; enabling again brings back the tokens that were not revoked."""
        name = check_user_name(name)
        new_role = None if role is None else Role.parse(role)
        if disabled is not None and not isinstance(disabled, bool):
            raise InvalidInput(f"disabled must be true or false, got {disabled!r}")
        actor = check_text(actor, "actor")

        def tx(conn: Connection) -> User:
            before = _user(self._user_row(conn, name, lock=True))
            final_role = new_role or before.role
            if models is ...:
                if final_role == Role.ADMIN and before.models is not None:
                    raise InvalidInput(
                        f"user {name!r} is limited to models {list(before.models)}; an admin "
                        "cannot be: give the new role together with no models"
                    )
                scope = before.models
            else:
                scope = _check_models(models, final_role)  # type: ignore[arg-type]
            after = User(
                name=name,
                role=final_role,
                models=scope,
                created_at=before.created_at,
                disabled=before.disabled if disabled is None else disabled,
            )
            if after == before:
                return before
            now = now_ms()
            conn.execute(
                sa.update(T.users)
                .where(T.users.c.name == name)
                .values(
                    role=after.role.value,
                    models=None if scope is None else list(scope),
                    disabled=after.disabled,
                    updated_at=now,
                )
            )
            self._audit(
                conn,
                actor=actor,
                action="user.disable"
                if after.disabled and not before.disabled
                else "user.enable"
                if before.disabled and not after.disabled
                else "user.update",
                entity_type="user",
                entity_id=name,
                before=_user_dict(before),
                after=_user_dict(after),
                at=now,
                route=route,
            )
            return after

        return self._write(tx)

    # -- tokens ------------------------------------------------------------------------------

    def create_token(
        self,
        user: str,
        description: str = "",
        *,
        actor: str = "local",
        route: str | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new token for an enabled user: its record and its plaintext, which is never shown
        again (only a scrypt hash of its secret is stored)."""
        user = check_user_name(user)
        if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
            raise InvalidInput(f"description must be a string of at most {_MAX_DESCRIPTION} chars")
        actor = check_text(actor, "actor")
        token_id, secret, plaintext = new_token()
        secret_hash = hash_secret(secret)  # slow: computed outside the transaction
        now = now_ms()
        info = TokenInfo(token_id=token_id, user=user, description=description, created_at=now)

        def tx(conn: Connection) -> TokenInfo:
            owner = _user(self._user_row(conn, user, lock=True))
            if owner.disabled:
                raise Conflict(f"user {user!r} is disabled; enable it before giving it a token")
            conn.execute(
                T.api_tokens.insert(),
                {
                    "token_id": token_id,
                    "user_name": user,
                    "secret_hash": secret_hash,
                    "description": description,
                    "created_at": now,
                },
            )
            self._audit(
                conn,
                actor=actor,
                action="token.create",
                entity_type="token",
                entity_id=token_id,
                after=_token_dict(info),
                at=now,
                route=route,
            )
            return info

        return self._write(tx), plaintext

    def get_token(self, token_id: str) -> TokenInfo:
        """The token's record, or ``NotFound``."""
        token_id = check_text(token_id, "token id", 32)
        return self._read(lambda conn: _token(self._token_row(conn, token_id)))

    def _token_row(self, conn: Connection, token_id: str, *, lock: bool = False) -> Any:
        stmt = sa.select(T.api_tokens).where(T.api_tokens.c.token_id == token_id)
        if lock and self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(f"token {token_id!r} does not exist")
        return row

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Every token (of one user), revoked ones included, oldest first."""
        at = T.api_tokens
        stmt = sa.select(at).order_by(at.c.created_at, at.c.token_id)
        if user is not None:
            stmt = stmt.where(at.c.user_name == check_user_name(user))
        return self._read(lambda conn: [_token(r) for r in conn.execute(stmt)])

    def revoke_token(
        self, token_id: str, *, actor: str = "local", route: str | None = None
    ) -> TokenInfo:
        """Revoke a token: the next request that presents it fails. Revoking a revoked token
        changes nothing and returns it as it is."""
        token_id = check_text(token_id, "token id", 32)
        actor = check_text(actor, "actor")
        at = T.api_tokens

        def tx(conn: Connection) -> TokenInfo:
            before = _token(self._token_row(conn, token_id, lock=True))
            if before.revoked_at is not None:
                return before
            now = now_ms()
            conn.execute(sa.update(at).where(at.c.token_id == token_id).values(revoked_at=now))
            after = dataclasses.replace(before, revoked_at=now)
            self._audit(
                conn,
                actor=actor,
                action="token.revoke",
                entity_type="token",
                entity_id=token_id,
                before=_token_dict(before),
                after=_token_dict(after),
                at=now,
                route=route,
            )
            return after

        info = self._write(tx)
        self._verified.discard(token_id)
        return info

    def authenticate(self, plaintext: str) -> User | None:
        """The enabled user a valid, unrevoked token belongs to; None for anything else
        (malformed, unknown id, wrong secret, revoked, user disabled). Reads the token's row on
        every call; scrypt runs only the first time a token is seen by this store object."""
        parsed = parse_token(plaintext)
        if parsed is None:
            return None
        at, u = T.api_tokens, T.users
        stmt = (
            sa.select(at.c.secret_hash, at.c.revoked_at, at.c.last_used_at, u)
            .join(u, u.c.name == at.c.user_name)
            .where(at.c.token_id == parsed.token_id)
        )
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        cache = self._verified
        known = cache.check(parsed.token_id, row.secret_hash, parsed.secret)
        if known is None:
            if not cache.may_verify(parsed.token_id):
                return None  # a wrong secret for this id just failed: no scrypt for a while
            known = verify_secret(parsed.secret, row.secret_hash)
            if known:
                cache.add(parsed.token_id, row.secret_hash, parsed.secret)
            else:
                cache.failed(parsed.token_id)
        if not known or row.revoked_at is not None or row.disabled:
            return None
        now = now_ms()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_MS:
            self._touch_token(parsed.token_id, now)
        return _user(row)

    def _touch_token(self, token_id: str, now: int) -> None:
        """Best effort: a busy database delays ``last_used_at``, never a request."""
        at = T.api_tokens
        stmt = (
            sa.update(at)
            .where(at.c.token_id == token_id)
            .where(sa.or_(at.c.last_used_at.is_(None), at.c.last_used_at < now))
            .values(last_used_at=now)
        )
        try:
            self._write(lambda conn: conn.execute(stmt))
        except ModelloopError as e:
            logger.warning("could not record the use of token %s: %s", token_id, e)

    # -- audit -------------------------------------------------------------------------------

    def add_audit_event(
        self,
        *,
        actor: str,
        action: str,
        entity_type: str,
        entity_id: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> AuditEvent:
        """Append an audit event and return it. ``model`` defaults to the registered model a
        registry entity id names (``m``, ``m/3``, ``m@alias``). Nothing ever updates or deletes
        an audit event."""
        actor = check_text(actor, "actor")
        action = check_text(action, "action", 64)
        entity_type = check_text(entity_type, "entity type", 64)
        entity_id = check_text(entity_id, "entity id", 1024)
        if route is not None:
            route = check_text(route, "route", T.NAME_LEN)
        if model is not None:
            model = check_text(model, "model", T.NAME_LEN)
        now = now_ms()

        def tx(conn: Connection) -> AuditEvent:
            event_id = self._audit(
                conn,
                actor=actor,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                before=before,
                after=after,
                at=now,
                route=route,
                model=model,
            )
            row = conn.execute(
                sa.select(T.audit_events).where(T.audit_events.c.event_id == event_id)
            ).one()
            return audit_event(row)

        return self._write(tx)
