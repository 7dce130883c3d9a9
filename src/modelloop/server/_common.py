"""What every route module shares: the store of the app, JSON responses, idempotent writes and
the actor a write is recorded under."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from modelloop.server._auth import Principal
from modelloop.server._idempotency import KEY_HEADER, IdempotencyKeys, StoredResponse
from modelloop.store._http._codec import dumps
from modelloop.store._sql import SqlStore

__all__ = ["JSON", "actor", "json_response", "store_of", "write"]

JSON = "application/json"


def store_of(request: Request) -> SqlStore:
    store: SqlStore = request.app.state.store
    return store


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` (records, lists, mappings, plain values) as a JSON response."""
    return Response(dumps(value), status_code=status, media_type=JSON)


def write(request: Request, principal: Principal, work: Callable[[], Any]) -> Response:
    """Run a write once per idempotency key and answer with its result as JSON (a retry with
    the same key gets the first answer and writes nothing)."""
    keys: IdempotencyKeys = request.app.state.idempotency
    scope = f"{principal.name} {request.method} {request.url.path}"

    def run() -> StoredResponse:
        return StoredResponse(200, dumps(work()))

    stored = keys.run(scope, request.headers.get(KEY_HEADER), run)
    return Response(stored.body, status_code=stored.status, media_type=JSON)


def open_mode(request: Request) -> bool:
    """Whether the server runs without users (loopback only): then nobody is authenticated."""
    return not store_of(request).has_users()


def actor(request: Request, principal: Principal, supplied: str) -> str:
    """The name a write is recorded under: the authenticated user, never a name the client
    sent; without users (open mode, loopback only) there is no identity, so the client's."""
    return supplied if open_mode(request) else principal.name
