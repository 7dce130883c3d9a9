"""What every route module shares: the store of the app, JSON responses, writes that are
idempotent and audited, and the actor a write is recorded under."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request, Response
from sqlalchemy.engine import Connection

from modelloop.server._auth import OPEN_MODE_PRINCIPAL, Principal, audit_event, route_of
from modelloop.server._idempotency import KEY_HEADER, IdempotencyKeys, StoredResponse
from modelloop.store._http._codec import dumps
from modelloop.store._sql import SqlStore
from modelloop.store._sql._registry import AUDIT_ROUTE

__all__ = ["JSON", "actor", "audit", "json_response", "store_of", "write"]

JSON = "application/json"


def store_of(request: Request) -> SqlStore:
    store: SqlStore = request.app.state.store
    return store


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` (records, lists, mappings, plain values) as a JSON response."""
    return Response(dumps(value), status_code=status, media_type=JSON)


def audit(
    request: Request,
    principal: Principal,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """:func:`modelloop.server._auth.audit` for a change made inside :func:`write`: the event
    (the authenticated user, the route, the object, before and after) is written by ``write``
    once the change is done, in the transaction of the change and its idempotency key."""
    pending: list[dict[str, Any]] = request.state.__dict__.setdefault("pending_audit", [])
    pending.append(audit_event(request, principal, action, entity_type, entity_id, before, after))


def write(
    request: Request, principal: Principal, work: Callable[[], Any], *, keyed: bool = True
) -> Response:
    """Run a write and answer with its result as JSON: the change, its audit events and the
    record of its idempotency key are one transaction, so either all of them are stored or
    none.

    ``keyed``: the write is not naturally idempotent, so a retry with the same
    ``Idempotency-Key`` gets the first answer and writes nothing; writes whose repetition
    changes nothing (setting a tag, ending a run twice with one status) pass ``keyed=False``
    and skip that bookkeeping. ``work`` may run more than once (the transaction is retried
    whole on contention), so it must only call the store and :func:`audit`."""
    keys: IdempotencyKeys = request.app.state.idempotency
    store = store_of(request)
    scope = f"{principal.name} {request.method} {request.url.path}"
    state = request.state.__dict__

    def run() -> StoredResponse:
        state["pending_audit"] = []  # a retried transaction records its events afresh
        return StoredResponse(200, dumps(work()))

    def finish(conn: Connection) -> None:
        store._audit_many(conn, state.pop("pending_audit", []))

    key = request.headers.get(KEY_HEADER) if keyed else None
    # audit rows the store writes itself (registry changes) carry the route too
    token = AUDIT_ROUTE.set(route_of(request))
    try:
        stored = keys.run(scope, key, run, finish)
    finally:
        AUDIT_ROUTE.reset(token)
    return Response(stored.body, status_code=stored.status, media_type=JSON)


def actor(request: Request, principal: Principal, supplied: str) -> str:
    """The name a write is recorded under: the authenticated user, never a name the client
    sent; without users (open mode, loopback only) there is no identity, so the client's."""
    return supplied if principal is OPEN_MODE_PRINCIPAL else principal.name
