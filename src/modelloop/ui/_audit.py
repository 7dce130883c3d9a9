"""The audit log page (admins only): every recorded change, newest first, filtered by model,
user and time, a page at a time."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from modelloop.access import Role
from modelloop.exceptions import InvalidInput
from modelloop.ui._app import client_of, render
from modelloop.ui._auth import require

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["PAGE_SIZE", "audit_page", "parse_since"]

PAGE_SIZE = 50
MAX_PAGES = 200  # the newest 10,000 events can be paged through; filters narrow the rest


def parse_since(value: str) -> int | None:
    """``YYYY-MM-DD`` or an ISO date-time (UTC unless it says otherwise) as epoch ms."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"since must be a date (2026-01-31) or a date and time (2026-01-31T12:00), "
            f"not {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return int(moment.timestamp() * 1000)


def audit_page(request: Request) -> Response:
    """The audit log: filters ``model``, ``user``, ``since``; ``page`` counts from 1."""
    require(request, Role.ADMIN)
    q = request.query_params
    model = q.get("model", "").strip()
    user = q.get("user", "").strip()
    since_text = q.get("since", "").strip()
    try:
        page = max(1, min(int(q.get("page", "1")), MAX_PAGES))
    except ValueError:
        raise InvalidInput(f"page must be a number, not {q.get('page')!r}") from None
    since = parse_since(since_text)
    newest = client_of(request).store.list_audit_events(
        model=model or None,
        actor=user or None,
        since=since,
        limit=page * PAGE_SIZE + 1,
    )
    newest.reverse()  # newest first
    events = newest[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    more = len(newest) > page * PAGE_SIZE and page < MAX_PAGES
    filters = {"model": model, "user": user, "since": since_text}
    kept = {k: v for k, v in filters.items() if v}

    def page_query(n: int) -> str:
        return urlencode({**kept, "page": n})

    return render(
        request,
        "audit.html",
        {
            "title": "Audit log",
            "events": events,
            "filters": filters,
            "page": page,
            "previous_query": page_query(page - 1) if page > 1 else None,
            "next_query": page_query(page + 1) if more else None,
        },
    )
