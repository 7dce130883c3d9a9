"""A model's loop page: where its loop stands (paused or not, awaiting approval or not), the
canary share over time, and the timeline of the loop's events with their evidence; the
operator actions' links are the deployers' (``_actions``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelloop.ui._app import client_of, render
from modelloop.ui._charts import finite

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["loop_page"]

MAX_EVENTS = 1000


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def evidence_text(evidence: Mapping[str, Any]) -> str:
    """An event's evidence as indented JSON, for people to read (the page escapes it)."""
    return json.dumps(evidence, default=_plain, indent=2, sort_keys=True)


def loop_page(request: Request) -> Response:
    """The loop's state and its newest events (oldest first in the chart, newest first below)."""
    store = client_of(request).store
    name = request.path_params["name"]
    events = store.list_loop_events(name, limit=MAX_EVENTS)
    state = store.get_loop_state(name)
    shares = []
    for e in events:
        share = finite(e.evidence.get("share"))
        if share is not None:
            shares.append({"t": e.timestamp, "share": share, "kind": e.kind})
        elif e.kind in ("promote", "rollback"):  # the canary ends either way
            shares.append({"t": e.timestamp, "share": 0.0, "kind": e.kind})
    return render(
        request,
        "loop.html",
        {
            "title": f"Loop of {name}",
            "name": name,
            "state": state,
            "paused": None if state is None else state.data.get("paused"),
            "events": [(e, evidence_text(e.evidence)) for e in reversed(events)],
            "chart": {"shares": shares},
        },
    )
