"""The loop's link to a running model server: its admin API for routing, and its Prometheus
metrics for the judge's latency and error guards.

Standard library HTTP only (the controller must not need the serving extra). Every failure to
reach the server is :class:`ServiceUnavailable`, which the controller turns into a wait, never a
blind promotion.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelloop.exceptions import ServiceUnavailable
from modelloop.loop._judge import GuardStats

__all__ = ["RouteCounters", "ServerLink", "guard_stats"]

_PREFIX = "modelloop_serving_"


@dataclass(frozen=True)
class RouteCounters:
    """Cumulative counters of one route of one model, as scraped: requests by status class and
    the latency histogram's cumulative bucket counts."""

    requests: int = 0
    server_errors: int = 0
    buckets: Mapping[float, float] = field(default_factory=dict)  # upper bound -> count <= it

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "buckets": [[le, n] for le, n in sorted(self.buckets.items()) if math.isfinite(le)]
            + [["+Inf", self.buckets.get(math.inf, 0.0)]],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RouteCounters:
        buckets = {math.inf if le == "+Inf" else float(le): float(n) for le, n in d["buckets"]}
        return cls(int(d["requests"]), int(d["server_errors"]), buckets)


def _quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket (as Prometheus's
    ``histogram_quantile`` does); None without observations."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, buckets[bounds[-1]] if bounds else 0.0)
    if not bounds or total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the largest finite bound: report that bound
            width = count - below
            return lower + (le - lower) * ((rank - below) / width if width > 0 else 1.0)
        lower, below = le, count
    return lower


def guard_stats(before: RouteCounters | None, after: RouteCounters | None) -> GuardStats | None:
    """Latency p99 (ms) and the server-error share of one route between two scrapes."""
    if after is None:
        return None
    before = before or RouteCounters()
    requests = after.requests - before.requests
    if requests < 0:  # the server restarted between the scrapes: its counters began again
        before = RouteCounters()
        requests = after.requests
    errors = after.server_errors - before.server_errors
    delta = {le: n - before.buckets.get(le, 0.0) for le, n in after.buckets.items()}
    p99 = _quantile(0.99, delta)
    return GuardStats(
        p99_ms=None if p99 is None else p99 * 1000.0,
        error_rate=errors / requests if requests > 0 else None,
        requests=requests,
    )


class ServerLink:
    """A running ``modelloop serve``: read its routing, change it, make it follow aliases now,
    and scrape its counters."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout_s

    def __repr__(self) -> str:
        return f"ServerLink({self.url!r})"

    def _call(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise ServiceUnavailable(
                f"{method} {self.url}{path} answered {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnavailable(f"{method} {self.url}{path} failed: {reason}") from None

    def routing(self, model: str) -> dict[str, Any]:
        """The model's champion, challenger, mode and share, as the server describes them."""
        result = json.loads(self._call("GET", f"/v1/models/{model}"))
        return dict(result)

    def set_routing(
        self, model: str, *, mode: str, challenger: str | None = None, share: float = 0.0
    ) -> dict[str, Any]:
        """Send traffic to a challenger (``"NAME/3"`` or ``"NAME@challenger"``) in canary or shadow
        mode, or switch it off."""
        body: dict[str, Any] = {"mode": mode, "share": share}
        if challenger is not None:
            body["challenger"] = challenger
        return dict(json.loads(self._call("PUT", f"/v1/admin/models/{model}/routing", body)))

    def reload(self) -> list[str]:
        """Make the server follow alias moves now; what changed."""
        return list(json.loads(self._call("POST", "/v1/admin/reload", {})).get("changed", []))

    def counters(self, model: str) -> dict[str, RouteCounters]:
        """Cumulative request counters and latency buckets of each route of ``model``."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self._call("GET", "/metrics").decode()
        requests: dict[str, int] = {}
        errors: dict[str, int] = {}
        buckets: dict[str, dict[float, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("model") != model:
                    continue
                route = s.labels.get("route", "")
                if s.name == _PREFIX + "requests_total":
                    n = int(s.value)
                    requests[route] = requests.get(route, 0) + n
                    if s.labels.get("status", "").startswith("5"):
                        errors[route] = errors.get(route, 0) + n
                elif s.name == _PREFIX + "request_duration_seconds_bucket":
                    le = s.labels["le"]
                    bound = math.inf if le == "+Inf" else float(le)
                    buckets.setdefault(route, {})[bound] = float(s.value)
        routes = set(requests) | set(buckets)
        return {
            r: RouteCounters(requests.get(r, 0), errors.get(r, 0), buckets.get(r, {}))
            for r in routes
        }
