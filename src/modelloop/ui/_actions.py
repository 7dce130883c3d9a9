"""The dashboard's writes: promote (point an alias at a version), roll back (point it back at
the version it pointed to before its last move), ask the loop for a retrain (the operator
action of ``modelloop loop retrain``), and pause, resume, approve or reject the loop (those of
``modelloop loop pause|resume|approve|reject``), each behind a confirmation page.

A write needs the deployer role on the model, like ``PUT /api/v1/models/{name}/aliases`` and
the loop's transition route, and a CSRF token. The store audits an alias move in the transaction
of the move, under the authenticated user and the dashboard's route, as it does for the API; a
retrain request is audited as ``loop.retrain``, and a pause, resume, approval or rejection as
``loop.<action>``, with the loop's state before and after.
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

__all__ = ["LOOP_OPERATIONS", "may_retrain", "previous_version", "routes"]

#: The loop operations the dashboard offers: (heading verb, what the loop does after).
LOOP_OPERATIONS = {
    "pause": (
        "Pause",
        "The controller does nothing on its ticks until resumed: no trigger starts a retrain, no "
        "stage is judged or advanced, and a canary keeps the share of traffic it has now.",
    ),
    "resume": (
        "Resume",
        "The controller goes on from the state the loop was paused in, on its next tick; a "
        "stage's time limit and an approval's timeout are moved on by the time spent paused.",
    ),
    "approve": (
        "Approve",
        "The challenger goes on, on the controller's next tick: into its rollout (first stage), "
        "or, after its last stage, to champion.",
    ),
    "reject": (
        "Reject",
        "The challenger is dropped as a failed gate drops it: its traffic ends, the challenger "
        "alias is removed and the version is tagged rolled back.",
    ),
}

DEFAULT_ALIAS = "champion"


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/models/{name}/promote", promote_page, name="promote"),
        Route("/models/{name}/promote", promote_submit, methods=["POST"], name="promote_submit"),
        Route("/models/{name}/rollback", rollback_page, name="rollback"),
        Route("/models/{name}/rollback", rollback_submit, methods=["POST"], name="rollback_submit"),
        Route("/models/{name}/loop/retrain", retrain_page, name="retrain"),
        Route(
            "/models/{name}/loop/retrain", retrain_submit, methods=["POST"], name="retrain_submit"
        ),
        *(
            r
            for op in LOOP_OPERATIONS
            for r in (
                Route(f"/models/{{name}}/loop/{op}", _loop_page(op), name=f"loop_{op}"),
                Route(
                    f"/models/{{name}}/loop/{op}",
                    _loop_submit(op),
                    methods=["POST"],
                    name=f"loop_{op}_submit",
                ),
            )
        ),
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


def _idle_loop(store: Any, name: str) -> Any:
    """The loop state of ``name`` when a retrain may start now; 404 without a loop, 409 while
    it is busy."""
    from modelloop.loop._controller import WATCHING

    state = store.get_loop_state(name)
    if state is None:
        raise NotFound(f"no loop has run for model {name!r} (modelloop loop run)")
    if state.state not in WATCHING:
        raise Conflict(
            f"the loop of {name} is busy ({state.state}); a retrain can start once it is idle again"
        )
    return state


def may_retrain(state: Any) -> bool:
    """Whether a loop in ``state`` takes a retrain request now (it watches its triggers)."""
    try:
        from modelloop.loop._controller import WATCHING
    except ImportError:
        return False
    return state is not None and state.state in WATCHING and not state.data.get("paused")


def _loop_module() -> Any:
    try:
        from modelloop.loop import _controller
    except ImportError as exc:
        raise InvalidInput(
            f"asking the loop for a retrain needs the loop extra: pip install 'modelloop[loop]' "
            f"({exc.name} is missing)"
        ) from None
    return _controller


def retrain_page(request: Request) -> Response:
    """Ask to confirm a retrain request (with a reason, recorded with the loop's event)."""
    name = request.path_params["name"]
    require(request, Role.DEPLOYER, name)
    _loop_module()
    state = _idle_loop(client_of(request).store, name)
    return render(
        request,
        "confirm_retrain.html",
        {"title": f"Retrain {name} now", "name": name, "state": state},
    )


async def retrain_submit(request: Request) -> Response:
    """Put the loop into ``retraining`` (the controller trains on its next tick), as
    ``modelloop loop retrain`` does, after the role and CSRF checks."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    name = request.path_params["name"]
    form = await read_form(request)
    who = require(request, Role.DEPLOYER, name)
    controller = _loop_module()
    reason = form.get("reason", "").strip()[:500] or "requested in the dashboard"
    expected = form.get("expected", "")
    store: Any = client_of(request).store
    route = f"POST {request.scope.get('root_path', '')}/models/{{name}}/loop/retrain"

    def work() -> None:
        state = _idle_loop(store, name)
        if expected != str(state.revision):
            raise Conflict(
                f"the loop of {name} moved on (revision {state.revision}) since the confirmation "
                "page: look again before asking for a retrain"
            )
        event = controller.request_retrain(store, name, f"{reason} (by {who.name})")
        store.add_audit_event(
            actor=who.name,
            action="loop.retrain",
            entity_type="loop",
            entity_id=name,
            before={"state": state.state, "revision": state.revision},
            after={"state": event.state, "revision": state.revision + 1},
            route=route,
            model=name,
        )

    await run_in_threadpool(work)
    return RedirectResponse(str(request.url_for("loop", name=name)), status_code=303)


def _operable(store: Any, name: str, op: str, user: str) -> Any:
    """The loop state of ``name`` when ``op`` applies to it now: 404 without a loop, 409
    otherwise (e.g. approving a loop that awaits no approval)."""
    from modelloop.loop._operator import _plan

    state = store.get_loop_state(name)
    if state is None:
        raise NotFound(f"no loop has run for model {name!r} (modelloop loop run)")
    _plan(op, state, user, "", state.updated_at)  # type: ignore[arg-type]
    return state


def _loop_page(op: str) -> Any:
    def page(request: Request) -> Response:
        """Ask to confirm a pause, resume, approval or rejection (with a reason)."""
        name = request.path_params["name"]
        who = require(request, Role.DEPLOYER, name)
        _loop_module()
        state = _operable(client_of(request).store, name, op, who.name)
        verb, after = LOOP_OPERATIONS[op]
        from modelloop.ui._loop import evidence_text

        return render(
            request,
            "confirm_loop.html",
            {
                "title": f"{verb} the loop of {name}",
                "name": name,
                "op": op,
                "verb": verb,
                "after": after,
                "state": state,
                "evidence": evidence_text(state.data.get("evidence") or {}),
            },
        )

    page.__name__ = f"loop_{op}_page"
    return page


def _loop_submit(op: str) -> Any:
    async def submit(request: Request) -> Response:
        """Apply the operation after the role and CSRF checks, if the loop is still at the
        revision the confirmation page showed (409 otherwise)."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import RedirectResponse

        name = request.path_params["name"]
        form = await read_form(request)
        who = require(request, Role.DEPLOYER, name)
        _loop_module()
        reason = form.get("reason", "").strip()[:500]
        try:
            expected = int(form.get("expected", ""))
        except ValueError:
            raise Conflict("the confirmation page's revision is missing: look again") from None
        store: Any = client_of(request).store
        route = f"POST {request.scope.get('root_path', '')}/models/{{name}}/loop/{op}"

        def work() -> None:
            from modelloop.loop._operator import operate

            before = store.get_loop_state(name)
            state, _event = operate(
                store,
                name,
                op,  # type: ignore[arg-type]
                user=who.name,
                reason=reason,
                expected_revision=expected,
            )
            store.add_audit_event(
                actor=who.name,
                action=f"loop.{op}",
                entity_type="loop",
                entity_id=name,
                before=None
                if before is None
                else {
                    "state": before.state,
                    "revision": before.revision,
                    "paused": bool(before.data.get("paused")),
                },
                after={
                    "state": state.state,
                    "revision": state.revision,
                    "paused": bool(state.data.get("paused")),
                    "reason": reason,
                },
                route=route,
                model=name,
            )

        await run_in_threadpool(work)
        return RedirectResponse(str(request.url_for("loop", name=name)), status_code=303)

    submit.__name__ = f"loop_{op}_submit"
    return submit
