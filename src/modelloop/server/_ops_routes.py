"""Monitoring results, alerts, loop states/events/leases, the audit log and the store itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from modelloop.access import Role
from modelloop.server._auth import Principal, check_model, require
from modelloop.server._common import actor, audit, json_response, store_of, write
from modelloop.store._records import AlertRecord
from modelloop.store._sql import SqlStore

__all__ = ["router"]

router = APIRouter()

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]
Deployer = Annotated[Principal, Depends(require(Role.DEPLOYER))]


# Values the store checks itself are typed ``Any``: a bad one gets the store's own error.


class MonitoringIn(BaseModel):
    model_name: Any
    model_version: Any
    window_start: Any
    window_end: Any
    num_rows: Any
    share_drifted: Any = None
    dataset_drift: Any = None
    drifted_columns: Any = ()
    metrics: Any = None
    payload: Any = None
    created_at: Any = None


class AlertIn(BaseModel):
    model_name: Any
    rule: Any
    firing: Any
    since: Any
    updated_at: Any
    value: Any = None
    message: Any = ""


class PutAlertIn(BaseModel):
    alert: AlertIn
    event_status: Any = None


class TransitionIn(BaseModel):
    expected_revision: Any
    state: Any
    data: Any
    kind: Any
    message: Any
    evidence: Any = None
    holder: Any = None
    now: Any = None


class LoopEventIn(BaseModel):
    kind: Any
    state: Any
    message: Any
    evidence: Any = None
    now: Any = None


class OperateIn(BaseModel):
    reason: Any = ""
    expected_revision: Any = None
    user: Any = None  # heeded in open mode only (no users): otherwise the authenticated one


class LeaseIn(BaseModel):
    holder: Any
    ttl_ms: Any
    now: Any = None


# -- the store ---------------------------------------------------------------------------------


@router.get("/store", tags=["store"], summary="The schema revision of the store in force")
def store_info(request: Request, principal: Viewer) -> Response:
    return json_response({"revision": request.app.state.revision})


# -- monitoring ------------------------------------------------------------------------------


@router.post("/monitoring/results", tags=["monitoring"], summary="Store one monitoring run")
def add_monitoring_result(request: Request, body: MonitoringIn, principal: Editor) -> Response:
    check_model(principal, str(body.model_name))

    def work() -> Any:
        record = store_of(request).add_monitoring_result(
            body.model_name,
            model_version=body.model_version,
            window_start=body.window_start,
            window_end=body.window_end,
            num_rows=body.num_rows,
            share_drifted=body.share_drifted,
            dataset_drift=body.dataset_drift,
            drifted_columns=body.drifted_columns,
            metrics=body.metrics,
            payload=body.payload,
            created_at=body.created_at,
        )
        audit(
            request,
            principal,
            "monitoring.result",
            "monitoring_result",
            f"{body.model_name}/{record.result_id}",
        )
        return record

    return write(request, principal, work)


@router.get("/monitoring/results", tags=["monitoring"], summary="A model's monitoring history")
def list_monitoring_results(
    request: Request,
    principal: Viewer,
    model_name: Annotated[str, Query()],
    limit: Annotated[int, Query()] = 100,
    since: Annotated[int | None, Query()] = None,
) -> Response:
    check_model(principal, model_name)
    results = store_of(request).list_monitoring_results(model_name, limit=limit, since=since)
    return json_response(results)


@router.get("/alerts", tags=["monitoring"], summary="Alert states")
def list_alerts(
    request: Request,
    principal: Viewer,
    model_name: Annotated[str | None, Query()] = None,
    firing_only: Annotated[bool, Query()] = False,
) -> Response:
    return _scoped_list(
        principal,
        model_name,
        lambda: store_of(request).list_alerts(model_name, firing_only=firing_only),
    )


@router.put("/alerts", tags=["monitoring"], summary="Insert or replace an alert state")
def put_alert(request: Request, body: PutAlertIn, principal: Editor) -> Response:
    return _change_alert(
        request,
        principal,
        body.alert,
        "alert.put",
        lambda store, alert: store.put_alert(alert, event_status=body.event_status),
    )


@router.post("/alerts/transition", tags=["monitoring"], summary="Apply an evaluated alert state")
def transition_alert(request: Request, body: AlertIn, principal: Editor) -> Response:
    return _change_alert(
        request,
        principal,
        body,
        "alert.transition",
        lambda store, alert: store.transition_alert(alert),
        keyed=False,
    )


@router.get("/alerts/state", tags=["monitoring"], summary="The state of one rule for one model")
def get_alert(
    request: Request,
    principal: Viewer,
    model_name: Annotated[str, Query()],
    rule: Annotated[str, Query()],
) -> Response:
    check_model(principal, model_name)
    return json_response({"alert": store_of(request).get_alert(model_name, rule)})


@router.get("/alerts/events", tags=["monitoring"], summary="The newest alert events")
def list_alert_events(
    request: Request,
    principal: Viewer,
    model_name: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query()] = 1000,
) -> Response:
    return _scoped_list(
        principal, model_name, lambda: store_of(request).list_alert_events(model_name, limit=limit)
    )


# -- loop ------------------------------------------------------------------------------------


@router.get("/loop/states", tags=["loop"], summary="The loop state of every model")
def list_loop_states(request: Request, principal: Viewer) -> Response:
    return json_response(_in_scope(principal, store_of(request).list_loop_states()))


@router.get("/loop/states/{model_name}", tags=["loop"], summary="Where a model's loop stands")
def get_loop_state(request: Request, model_name: str, principal: Viewer) -> Response:
    check_model(principal, model_name)
    return json_response({"state": store_of(request).get_loop_state(model_name)})


@router.post(
    "/loop/states/{model_name}/transition", tags=["loop"], summary="Compare-and-set a loop state"
)
def transition_loop(
    request: Request, model_name: str, body: TransitionIn, principal: Deployer
) -> Response:
    check_model(principal, model_name)

    def work() -> Any:
        state, event = store_of(request).transition_loop(
            model_name,
            expected_revision=body.expected_revision,
            state=body.state,
            data=body.data,
            kind=body.kind,
            message=body.message,
            evidence=body.evidence,
            holder=body.holder,
            now=body.now,
        )
        audit(
            request,
            principal,
            "loop.transition",
            "loop",
            model_name,
            before={"revision": body.expected_revision},
            after={"state": state.state, "revision": state.revision},
        )
        return {"state": state, "event": event}

    return write(request, principal, work)


def _operate(
    request: Request, model_name: str, op: str, body: OperateIn, principal: Principal
) -> Response:
    """A person's action on a loop (``modelloop.loop._operator``), recorded under the
    authenticated user in the loop's event and in the audit log with the state before and
    after."""
    from modelloop.exceptions import InvalidInput
    from modelloop.loop._operator import operate

    check_model(principal, model_name)
    if not isinstance(body.reason, str) or not (
        body.expected_revision is None or isinstance(body.expected_revision, int)
    ):
        raise InvalidInput("reason must be text and expected_revision a number or null")
    user = actor(request, principal, str(body.user or "")) or principal.name

    def work() -> Any:
        store = store_of(request)
        before = store.get_loop_state(model_name)
        state, event = operate(
            store,
            model_name,
            op,  # type: ignore[arg-type]
            user=user,
            reason=body.reason,
            expected_revision=body.expected_revision,
        )
        audit(
            request,
            principal,
            f"loop.{op}",
            "loop",
            model_name,
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
                "reason": body.reason,
            },
        )
        return {"state": state, "event": event}

    return write(request, principal, work)


@router.post("/loop/states/{model_name}/pause", tags=["loop"], summary="Pause a model's loop")
def pause_loop(request: Request, model_name: str, body: OperateIn, principal: Deployer) -> Response:
    return _operate(request, model_name, "pause", body, principal)


@router.post("/loop/states/{model_name}/resume", tags=["loop"], summary="Resume a paused loop")
def resume_loop(
    request: Request, model_name: str, body: OperateIn, principal: Deployer
) -> Response:
    return _operate(request, model_name, "resume", body, principal)


@router.post(
    "/loop/states/{model_name}/approve",
    tags=["loop"],
    summary="Approve a challenger awaiting approval",
)
def approve_loop(
    request: Request, model_name: str, body: OperateIn, principal: Deployer
) -> Response:
    return _operate(request, model_name, "approve", body, principal)


@router.post(
    "/loop/states/{model_name}/reject",
    tags=["loop"],
    summary="Reject a challenger awaiting approval",
)
def reject_loop(
    request: Request, model_name: str, body: OperateIn, principal: Deployer
) -> Response:
    return _operate(request, model_name, "reject", body, principal)


@router.post("/loop/events/{model_name}", tags=["loop"], summary="Append a loop event")
def add_loop_event(
    request: Request, model_name: str, body: LoopEventIn, principal: Deployer
) -> Response:
    check_model(principal, model_name)

    def work() -> Any:
        event = store_of(request).add_loop_event(
            model_name,
            kind=body.kind,
            state=body.state,
            message=body.message,
            evidence=body.evidence,
            now=body.now,
        )
        audit(request, principal, "loop.event", "loop", model_name, after={"kind": body.kind})
        return event

    return write(request, principal, work)


@router.get("/loop/events/{model_name}", tags=["loop"], summary="A model's loop events")
def list_loop_events(
    request: Request,
    model_name: str,
    principal: Viewer,
    limit: Annotated[int, Query()] = 1000,
    after_id: Annotated[int | None, Query()] = None,
) -> Response:
    check_model(principal, model_name)
    events = store_of(request).list_loop_events(model_name, limit=limit, after_id=after_id)
    return json_response(events)


@router.post("/loop/leases/{model_name}", tags=["loop"], summary="Take or renew a loop lease")
def acquire_loop_lease(
    request: Request, model_name: str, body: LeaseIn, principal: Deployer
) -> Response:
    check_model(principal, model_name)

    def work() -> Any:
        lease = store_of(request).acquire_loop_lease(
            model_name, body.holder, ttl_ms=body.ttl_ms, now=body.now
        )
        audit(request, principal, "loop.lease", "loop", model_name, after={"holder": lease.holder})
        return lease

    return write(request, principal, work, keyed=False)


@router.delete("/loop/leases/{model_name}", tags=["loop"], summary="Give a loop lease up")
def release_loop_lease(
    request: Request, model_name: str, principal: Deployer, holder: Annotated[str, Query()]
) -> Response:
    check_model(principal, model_name)

    def work() -> Any:
        released = store_of(request).release_loop_lease(model_name, holder)
        audit(request, principal, "loop.release", "loop", model_name, before={"holder": holder})
        return {"released": released}

    return write(request, principal, work)


def _scoped_list(
    principal: Principal, model_name: str | None, fetch: Callable[[], list[Any]]
) -> Response:
    """The records ``fetch`` reads about one model (which the principal must be allowed to see)
    or, without ``model_name``, about every model the principal may see."""
    if model_name is not None:
        check_model(principal, model_name)
    return json_response(_in_scope(principal, fetch()))


def _change_alert(
    request: Request,
    principal: Principal,
    body: AlertIn,
    action: str,
    apply: Callable[[SqlStore, AlertRecord], Any],
    *,
    keyed: bool = True,
) -> Response:
    """A write of the alert state ``body``: ``apply`` it to the store, audit it as ``action``
    with whether it fires, and answer the alert event ``apply`` returns."""
    check_model(principal, str(body.model_name))

    def work() -> Any:
        alert = AlertRecord(**body.model_dump())
        event = apply(store_of(request), alert)
        entity = f"{alert.model_name}/{alert.rule}"
        audit(request, principal, action, "alert", entity, after={"firing": alert.firing})
        return {"event": event}

    return write(request, principal, work, keyed=keyed)


def _in_scope(principal: Principal, records: list[Any]) -> list[Any]:
    """The records about models the principal may see (all of them when it is not scoped)."""
    if principal.models is None:
        return records
    return [r for r in records if r.model_name in principal.models]
