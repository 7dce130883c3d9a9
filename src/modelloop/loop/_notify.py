"""Telling the world what the loop did: its events to webhooks (the monitoring notifiers'
delivery, with retries), and its state as Prometheus gauges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelloop.store import LoopEvent, LoopState

__all__ = [
    "STATES",
    "LoopGauges",
    "LoopNotice",
    "event_dict",
    "state_dict",
    "webhook_notifiers",
]

#: Every state a loop can be in, one gauge series each.
STATES = (
    "idle",
    "retraining",
    "gating",
    "rollout",
    "awaiting_approval",
    "approved",
    "promoting",
    "promoted",
    "rolling_back",
    "rolled_back",
    "failed",
)


def event_dict(e: LoopEvent) -> dict[str, Any]:
    """A loop event as plain JSON-ready data."""
    return {
        "event_id": e.event_id,
        "timestamp": e.timestamp,
        "kind": e.kind,
        "state": e.state,
        "message": e.message,
        "evidence": dict(e.evidence),
    }


def state_dict(s: LoopState) -> dict[str, Any]:
    """A loop's state as plain JSON-ready data."""
    return {
        "model": s.model_name,
        "state": s.state,
        "revision": s.revision,
        "updated_at": s.updated_at,
        "data": dict(s.data),
    }


class LoopNotice:
    """A loop event in the shape notifiers deliver: ``rule`` is ``loop:<kind>`` and ``status``
    the state the loop is in after it, so receivers of alert webhooks read it too."""

    def __init__(self, event: LoopEvent) -> None:
        self.event = event

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        return {
            "source": "loop",
            "model": e.model_name,
            "rule": f"loop:{e.kind}",
            "status": e.state,
            **event_dict(e),
        }


def webhook_notifiers(urls: Sequence[str]) -> tuple[list[Any], Callable[[LoopEvent], None]]:
    """Webhook notifiers for ``urls`` and one callback that hands every loop event to each."""
    from modelloop.monitoring._notifiers import WebhookNotifier

    notifiers = [WebhookNotifier(u) for u in urls]

    def notify(event: LoopEvent) -> None:
        for n in notifiers:
            n.notify(LoopNotice(event))  # type: ignore[arg-type]

    return notifiers, notify


class LoopGauges:
    """``modelloop_loop_state{model,state}`` (1 for the current state), ``..._canary_share``,
    ``..._challenger_version`` and ``..._events_total{model,kind}``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self._state = Gauge(
            "modelloop_loop_state",
            "1 for the state each model's loop is in, 0 for the others.",
            ["model", "state"],
            registry=self.registry,
        )
        self._share = Gauge(
            "modelloop_loop_canary_share",
            "Share of traffic the loop gives the challenger (0 outside a canary step).",
            ["model"],
            registry=self.registry,
        )
        self._challenger = Gauge(
            "modelloop_loop_challenger_version",
            "Version the loop is rolling out (NaN when none).",
            ["model"],
            registry=self.registry,
        )
        self._events = Counter(
            "modelloop_loop_events",
            "Loop events by kind (trigger, retrain, stage, judge, promote, rollback, wait, ...).",
            ["model", "kind"],
            registry=self.registry,
        )

    def update(self, state: LoopState) -> None:
        for s in STATES:
            self._state.labels(state.model_name, s).set(1.0 if s == state.state else 0.0)
        data = state.data
        # a challenger awaiting approval before its promotion holds its last canary share
        canary = state.state in ("rollout", "awaiting_approval") and data.get("mode") == "canary"
        self._share.labels(state.model_name).set(float(data.get("share", 0.0)) if canary else 0.0)
        busy = state.state in (
            "gating",
            "rollout",
            "awaiting_approval",
            "approved",
            "promoting",
            "rolling_back",
        )
        version = data.get("challenger") if busy else None
        self._challenger.labels(state.model_name).set(
            float(version) if version is not None else float("nan")
        )

    def count(self, event: LoopEvent) -> None:
        self._events.labels(event.model_name, event.kind).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve the gauges at ``http://host:port/metrics`` (loopback only: they have no auth)."""
        from prometheus_client import start_http_server

        from modelloop.exceptions import InvalidInput

        if host not in ("127.0.0.1", "localhost", "::1"):
            raise InvalidInput("loop metrics are served on loopback only (they carry no auth)")
        return start_http_server(port, addr=host, registry=self.registry)
