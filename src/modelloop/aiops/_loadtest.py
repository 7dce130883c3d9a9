"""The capacity of one replica, measured: a short closed-loop load test on loopback.

``modelloop ops plan --measure`` starts ``modelloop serve NAME@ALIAS`` on a free loopback port
and sends it one request body (the version's input example) from 1, 2, 4, ... concurrent
connections, a few seconds per level, counting requests, errors and the latency of each. The
capacity is the highest requests/s of a level whose p95 stayed within the SLO with no error.
The test stops at the first level that breaks the SLO or errs, and when more connections no
longer bring more throughput (the replica is saturated).

The load generator shares the machine with the replica, so on a small machine the figure is
conservative (the true capacity of a replica with its own cores is higher); a plan built on it
asks for more replicas, never fewer. When no level broke the SLO the figure is a lower bound,
and the capacity says so.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelloop.aiops._history import _quantiles
from modelloop.aiops._plan import Capacity
from modelloop.exceptions import InvalidInput

__all__ = ["LoadLevel", "measure_capacity"]

#: A level must bring this much more throughput than the best so far, or the replica is full.
_GROWTH = 1.05


@dataclass(frozen=True)
class LoadLevel:
    """One level of the load test: ``connections`` clients sending back to back."""

    connections: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
        }


def _level(
    url: str, body: bytes, headers: Mapping[str, str], connections: int, seconds: float
) -> LoadLevel:
    import httpcore

    warm_up = min(0.5, seconds / 4)
    pool = httpcore.ConnectionPool(max_connections=connections, retries=0)
    sent = [("Content-Type", "application/json"), *headers.items()]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = time.perf_counter()
    counted_from, stop_at = start + warm_up, start + warm_up + seconds

    def client(i: int) -> None:
        mine, now = latencies[i], time.perf_counter()
        while now < stop_at:
            t0 = now
            try:
                status = pool.request("POST", url, headers=sent, content=body).status
            except (httpcore.TimeoutException, httpcore.NetworkError):
                status = 599  # counted as an error
            now = time.perf_counter()
            if t0 >= counted_from:
                mine.append((now - t0) * 1000)
                if status >= 400:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    done = [ms for per in latencies for ms in per]
    p50, p95, _ = _quantiles(done)
    return LoadLevel(
        connections=connections,
        requests=len(done),
        errors=sum(errors),
        seconds=seconds,
        rps=len(done) / seconds,
        p50_ms=p50,
        p95_ms=p95,
    )


def measure_capacity(
    url: str,
    body: bytes,
    slo_ms: float = 100.0,
    *,
    seconds: float = 3.0,
    max_connections: int = 32,
    headers: Mapping[str, str] | None = None,
) -> tuple[Capacity, list[LoadLevel]]:
    """Load ``url`` (a predict route) with ``body`` from 1, 2, 4, ... up to ``max_connections``
    connections, ``seconds`` per level (after a short warm-up), and return the capacity at
    the p95 latency SLO ``slo_ms`` with every level measured (see the module for the rule)."""
    if not (math.isfinite(slo_ms) and slo_ms > 0):
        raise InvalidInput(f"the latency SLO must be a positive number of ms, got {slo_ms}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInput(f"seconds per level must be positive, got {seconds}")
    if max_connections < 1:
        raise InvalidInput(f"max_connections must be at least 1, got {max_connections}")
    levels: list[LoadLevel] = []
    best: LoadLevel | None = None
    broke: LoadLevel | None = None
    saturated = False
    connections = 1
    while connections <= max_connections:
        level = _level(url, body, headers or {}, connections, seconds)
        levels.append(level)
        if level.errors or not level.requests or not level.p95_ms <= slo_ms:
            broke = level
            break
        if best is not None and level.rps < best.rps * _GROWTH:
            best = level if level.rps > best.rps else best
            saturated = True  # more connections only queue
            break
        best = level
        connections *= 2
    if best is None:
        assert broke is not None
        why = (
            f"{broke.errors} of {broke.requests} requests failed"
            if broke.errors or not broke.requests
            else f"p95 {broke.p95_ms:.1f} ms > SLO {slo_ms:g} ms"
        )
        raise InvalidInput(
            f"the replica cannot keep the SLO even with one connection ({why}); "
            "raise --slo-ms or look at the model's latency"
        )
    detail = (
        f"load test on loopback: {best.rps:.1f} req/s at {best.connections} connection(s), "
        f"p95 {best.p95_ms:.1f} ms"
    )
    if broke is not None:
        detail += f"; {broke.connections} connections broke it (p95 {broke.p95_ms:.1f} ms)"
        return Capacity(best.rps, "measured", slo_ms, detail), levels
    if saturated:
        detail += f"; {levels[-1].connections} connections brought no more throughput"
        return Capacity(best.rps, "measured", slo_ms, detail), levels
    detail += "; the SLO was never broken, so this is a lower bound"
    return Capacity(best.rps, "measured", slo_ms, detail, lower_bound=True), levels
