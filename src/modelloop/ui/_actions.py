"""The dashboard's writes: promote (point an alias at a version) and roll back (point it back at
the version it pointed to before its last move), each behind a confirmation page.

A write needs the deployer role on the model, exactly like ``PUT /api/v1/models/{name}/aliases``,
and a CSRF token. The store audits the alias move in the transaction of the move, under the
authenticated user and the dashboard's route, as it does for the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelloop.access import Role
from modelloop.exceptions import Conflict, InvalidInput, NotFound
from modelloop.ui._app import client_of, render
from modelloop.ui._auth import read_form, require

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["previous_version", "routes"]

DEFAULT_ALIAS = "champion"


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/models/{name}/promote", promote_page, name="promote"),
        Route("/models/{name}/promote", promote_submit, methods=["POST"], name="promote_submit"),
        Route("/models/{name}/rollback", rollback_page, name="rollback"),
        Route("/models/{name}/rollback", rollback_submit, methods=["POST"], name="rollback_submit"),
    ]


def _current(store: Any, name: str, alias: str) -> int | None:
    return store.get_registered_model(name).aliases.get(alias)


def previous_version(store: Any, name: str, alias: str) -> int | None:
    """The version ``alias`` pointed to before its last move (from the audit log), or None when
    it never pointed anywhere else."""
    current = _current(store, name, alias)
    if current is None:
        return None
    events = store.list_audit_events(entity_type="alias", entity_id=f"{name}@{alias}", limit=50)
    for e in reversed(events):  # newest first
        if e.action == "alias.set" and e.after and e.after.get("version") == current:
            before = e.before.get("version") if e.before else None
            return int(before) if before is not None and before != current else None
    return None


def _alias(value: str | None) -> str:
    alias = (value or DEFAULT_ALIAS).strip()
    if not alias:
        raise InvalidInput("name the alias to move")
    return alias


def _version(value: str | None) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidInput(f"version must be a number, not {value!r}") from None


def _confirm(request: Request, context: dict[str, Any]) -> Response:
    return render(request, "confirm.html", {"title": context["heading"], **context})


def promote_page(request: Request) -> Response:
    """Ask to confirm pointing an alias at a version."""
    name = request.path_params["name"]
    require(request, Role.DEPLOYER, name)
    alias = _alias(request.query_params.get("alias"))
    version = _version(request.query_params.get("version"))
    store = client_of(request).store
    store.get_model_version(name, version)  # NotFound for a version that does not exist
    current = _current(store, name, alias)
    return _confirm(
        request,
        {
            "heading": f"Promote {name} v{version} to {alias}",
            "action": "promote",
            "name": name,
            "alias": alias,
            "current": current,
            "target": version,
        },
    )


def rollback_page(request: Request) -> Response:
    """Ask to confirm pointing an alias back at its previous version."""
    name = request.path_params["name"]
    require(request, Role.DEPLOYER, name)
    alias = _alias(request.query_params.get("alias"))
    store = client_of(request).store
    current = _current(store, name, alias)
    if current is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    previous = previous_version(store, name, alias)
    if previous is None:
        raise Conflict(f"{name}@{alias} never pointed at another version: nothing to roll back to")
    return _confirm(
        request,
        {
            "heading": f"Roll {name}@{alias} back to v{previous}",
            "action": "rollback",
            "name": name,
            "alias": alias,
            "current": current,
            "target": previous,
        },
    )


async def promote_submit(request: Request) -> Response:
    return await _move(request, "promote")


async def rollback_submit(request: Request) -> Response:
    return await _move(request, "rollback")


async def _move(request: Request, action: str) -> Response:
    """Move the alias after checking the role, the CSRF token and that the alias still points
    where the confirmation page showed (409 otherwise: someone moved it meanwhile)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    name = request.path_params["name"]
    form = await read_form(request)
    who = require(request, Role.DEPLOYER, name)
    alias = _alias(form.get("alias"))
    expected = form.get("expected", "")
    store = client_of(request).store
    route = f"POST {request.scope.get('root_path', '')}/models/{{name}}/{action}"

    def work() -> None:
        from modelloop.store._sql._registry import AUDIT_ROUTE

        current = _current(store, name, alias)
        if expected != ("" if current is None else str(current)):
            raise Conflict(
                f"{name}@{alias} now points at {'nothing' if current is None else f'v{current}'}, "
                "not where the confirmation page showed: look again before moving it"
            )
        if action == "rollback":
            target = previous_version(store, name, alias)
            if target is None:
                raise Conflict(f"{name}@{alias} has no previous version to roll back to")
        else:
            target = _version(form.get("version"))
        token = AUDIT_ROUTE.set(route)
        try:
            store.set_alias(name, alias, target, actor=who.name)
        finally:
            AUDIT_ROUTE.reset(token)

    await run_in_threadpool(work)
    return RedirectResponse(str(request.url_for("model", name=name)), status_code=303)
