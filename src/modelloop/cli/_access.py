"""``modelloop users``, ``modelloop tokens`` and ``modelloop audit``: who may do what, and what
they did. Directly on the SQL store of the settings, or through the server when
``MODELLOOP_STORE_URL`` is ``http(s)://`` (with ``MODELLOOP_TOKEN``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from modelloop.access import Role, TokenInfo, User
from modelloop.access._backend import AccessBackend, is_server_url, open_access
from modelloop.cli._output import JsonOpt, console, err_console, fmt_time, print_json, row
from modelloop.exceptions import InvalidInput

__all__ = ["audit_app", "parse_since", "tokens_app", "users_app"]

users_app = typer.Typer(help="Users and their roles (viewer, editor, deployer, admin).")
tokens_app = typer.Typer(help="API tokens: create (shown once), list, revoke.")
audit_app = typer.Typer(help="The audit log: who changed what, through which route.")
for _app in (users_app, tokens_app, audit_app):
    _app.info.no_args_is_help = True

RoleArg = Annotated[Role, typer.Argument(help="viewer, editor, deployer or admin.")]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="Limit the user to this registered model (repeatable); default: every model.",
    ),
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_since(value: str, *, now: float | None = None) -> int:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO date/time (local time unless it names a
    zone), as ms since the epoch."""
    text = value.strip().lower()
    m = _AGO.fullmatch(text)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        return int(((time.time() if now is None else now) - seconds) * 1000)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"--since {value!r}: give a duration ago (30m, 1h, 2d, 1w) or an ISO date/time "
            "(2026-12-01 or 2026-12-01T08:00:00+00:00)"
        ) from None
    return int(when.timestamp() * 1000)  # naive: local time, as fmt_time prints


@contextlib.contextmanager
def _backend() -> Iterator[AccessBackend]:
    import os

    if not is_server_url(os.environ.get("MODELLOOP_STORE_URL")):
        from modelloop._config import Settings
        from modelloop.cli._output import tell_store

        tell_store(Settings.from_env())
    backend = open_access()
    try:
        yield backend
    finally:
        backend.close()


def _models(models: list[str] | None) -> list[str] | None:
    return list(models) if models else None


def _print_users(users: list[User], title: str) -> None:
    table = Table(title=title)
    for col in ("name", "role", "models", "status", "created"):
        table.add_column(col)
    for u in users:
        models = "all" if u.models is None else ", ".join(u.models)
        status = "disabled" if u.disabled else "active"
        table.add_row(*row(u.name, u.role.value, models, status, fmt_time(u.created_at)))
    console.print(table)


def _show_user(user: User, title: str, as_json: bool) -> None:
    if as_json:
        print_json({"user": user})
    else:
        _print_users([user], title)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ + -).")],
    role: Annotated[Role, typer.Option("--role", help="viewer, editor, deployer or admin.")],
    models: ModelsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user. The first user ends open mode: from then on the server needs a token."""
    with _backend() as backend:
        user = backend.create_user(name, role, models=_models(models))
    _show_user(user, "user added", as_json)


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List users, disabled ones included."""
    with _backend() as backend:
        users = backend.list_users()
    if as_json:
        print_json({"users": users})
    else:
        _print_users(users, f"{len(users)} user(s)")


@users_app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: RoleArg,
    models: ModelsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a user's role and model scope (no --model: every model)."""
    with _backend() as backend:
        user = backend.update_user(name, role=role, models=_models(models))
    _show_user(user, "user updated", as_json)


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
) -> None:
    """Disable a user: their tokens stop working at once (users are never deleted)."""
    with _backend() as backend:
        user = backend.update_user(name, disabled=True)
    _show_user(user, "user disabled", as_json)


@users_app.command("enable")
def users_enable(
    name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
) -> None:
    """Enable a disabled user again (their tokens that were not revoked work again)."""
    with _backend() as backend:
        user = backend.update_user(name, disabled=False)
    _show_user(user, "user enabled", as_json)


def _print_tokens(tokens: list[TokenInfo], title: str) -> None:
    table = Table(title=title)
    for col in ("id", "user", "description", "status", "created", "last used"):
        table.add_column(col)
    for t in tokens:
        status = "active" if t.revoked_at is None else f"revoked {fmt_time(t.revoked_at)}"
        table.add_row(
            *row(
                t.token_id,
                t.user,
                t.description,
                status,
                fmt_time(t.created_at),
                fmt_time(t.last_used_at),
            )
        )
    console.print(table)


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option("--user", help="The user the token acts for.")],
    description: Annotated[
        str, typer.Option("--description", help="What the token is for (shown in lists).")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once: it is stored hashed and cannot be shown again."""
    with _backend() as backend:
        info, token = backend.create_token(user, description)
    if as_json:
        print_json({"token": token, "info": info})
        return
    typer.echo(token)
    err_console.print(
        f"token {info.token_id} for {info.user}: copy it now, it is not shown again "
        "(clients read it from MODELLOOP_TOKEN)",
        highlight=False,
    )


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their secrets), revoked ones included."""
    with _backend() as backend:
        tokens = backend.list_tokens(user)
    if as_json:
        print_json({"tokens": tokens})
    else:
        _print_tokens(tokens, f"{len(tokens)} token(s)")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (the part after mlt_).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: the next request that presents it gets 401."""
    with _backend() as backend:
        info = backend.revoke_token(token_id)
    if as_json:
        print_json({"token": info})
    else:
        _print_tokens([info], "token revoked")


@audit_app.command("list")
def audit_list(
    model: Annotated[str | None, typer.Option("--model", help="Only this model's events.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's changes.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="30m, 1h, 2d, 1w ago, or an ISO date/time.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Most events shown (the newest).")
    ] = 100,
    as_json: JsonOpt = False,
) -> None:
    """The newest audit events, oldest first: who, when, which route, before and after."""
    since_ms = None if since is None else parse_since(since)
    with _backend() as backend:
        events = backend.list_audit_events(actor=user, model=model, since=since_ms, limit=limit)
    if as_json:
        print_json({"events": events})
        return
    table = Table(title=f"{len(events)} audit event(s)")
    for col in ("id", "time", "user", "action", "object", "route"):
        table.add_column(col, no_wrap=col in ("id", "action"))
    table.add_column("change", overflow="fold")
    for e in events:
        table.add_row(
            *row(
                e.event_id,
                fmt_time(e.timestamp),
                e.actor,
                e.action,
                f"{e.entity_type} {e.entity_id}",
                e.route or "-",
                _change(e.before, e.after),
            )
        )
    console.print(table)


def _change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """What changed, briefly: ``key: old → new`` for each key that differs."""
    import json

    def show(value: Any) -> str:
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."

    old, new = dict(before or {}), dict(after or {})
    parts = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            parts.append(f"{key}={show(new[key])}")
        elif key not in new:
            parts.append(f"{key}: {show(old[key])} → -")
        elif old[key] != new[key]:
            parts.append(f"{key}: {show(old[key])} → {show(new[key])}")
    return "; ".join(parts) or "-"
