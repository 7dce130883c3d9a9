"""The operational history read from a Prometheus that scrapes ``modelloop serve``.

:func:`read_prometheus_history` asks Prometheus' HTTP API (``/api/v1/query_range``) for the
series the server exports on ``/metrics`` and maps them onto the rows of
:func:`~modelloop.aiops.read_ops_history` (the columns of :data:`OPS_COLUMNS`, one row per
step), so the anomaly scan and the CLI do not care where the history came from:

* ``requests``, ``errors_4xx``, ``errors_5xx``: the counter ``modelloop_serving_requests_total``
  (shadow copies left out), by the class of its ``status`` label; ``rejected``:
  ``modelloop_serving_rejected_requests_total`` (shadow refusals left out). Counters are read
  as they are at each step and differenced per series here (a drop is a restart: the new value
  counts), not through ``increase()``: that extrapolates to the window's edges and needs two
  samples inside it, so its per-step counts would not add up to what the server counted.
* ``batch_size``: the change of ``modelloop_serving_batch_size_sum`` over that of its
  ``_count``, the same way.
* ``latency_p50_ms`` / ``p95`` / ``p99``: ``histogram_quantile`` over
  ``rate(modelloop_serving_request_duration_seconds_bucket[window])`` summed by ``le``. The
  histogram's buckets bound the precision (e.g. 25 to 50 ms), and it also holds the time of
  refused requests, which the built-in history leaves out of its quantiles.
* ``queue_depth``: ``max_over_time`` of the gauge ``modelloop_serving_queue_depth``.
* ``cpu_percent`` and ``rss_bytes``: the process collector's
  ``modelloop_serving_process_cpu_seconds_total`` (as a rate) and
  ``modelloop_serving_process_resident_memory_bytes`` of the scrape targets that serve the model
  (matched on ``job`` and ``instance`` with ``modelloop_serving_model_version``).

A step where Prometheus has no ``modelloop_serving_model_version`` sample of the model (the
server was down, or not yet scraped) has no row, so a restart leaves a gap as it does in the
built-in history; the first step of each stretch only sets the counters' baseline.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelloop._names import check_model_name
from modelloop.exceptions import InvalidInput, NotFound, ServiceUnavailable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["prometheus_queries", "read_prometheus_history"]

#: Prometheus refuses a range query of more than 11,000 points per series; ask in chunks below.
_MAX_POINTS = 10_000


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def prometheus_queries(model: str, step_s: float, window_s: float | None = None) -> dict[str, str]:
    """The PromQL of each series read for ``model``, by name (raw counters are differenced
    here; the others are used as Prometheus answers them)."""
    m = f'model="{_label(model)}"'
    w = f"{_duration(window_s if window_s is not None else 2 * step_s)}"
    served = f"modelloop_serving_model_version{{{m}}}"
    latency = (
        f"sum by (le) (rate(modelloop_serving_request_duration_seconds_bucket"
        f'{{{m},route!="shadow"}}[{w}]))'
    )
    return {
        "up": f"count({served})",
        "requests": f'modelloop_serving_requests_total{{{m},route!="shadow"}}',
        "rejected": f'modelloop_serving_rejected_requests_total{{{m},reason!~"shadow.*"}}',
        "batch_sum": f"modelloop_serving_batch_size_sum{{{m}}}",
        "batch_count": f"modelloop_serving_batch_size_count{{{m}}}",
        "latency_p50_ms": f"1000 * histogram_quantile(0.5, {latency})",
        "latency_p95_ms": f"1000 * histogram_quantile(0.95, {latency})",
        "latency_p99_ms": f"1000 * histogram_quantile(0.99, {latency})",
        "queue_depth": f"max(max_over_time(modelloop_serving_queue_depth{{{m}}}[{w}]))",
        "cpu_percent": (
            f"100 * sum(rate(modelloop_serving_process_cpu_seconds_total[{w}])"
            f" and on (job, instance) {served})"
        ),
        "rss_bytes": (
            f"sum(modelloop_serving_process_resident_memory_bytes and on (job, instance) {served})"
        ),
    }


def _duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


class _Prometheus:
    def __init__(self, url: str, timeout_s: float) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"--prometheus must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def range(self, query: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """The matrix of ``query`` from ``start`` to ``end`` (epoch seconds), in chunks."""
        import httpx

        out: list[dict[str, Any]] = []
        at = start
        while at <= end:
            stop = min(end, at + (_MAX_POINTS - 1) * step_s)
            where = f"{self.url}/api/v1/query_range"
            try:
                r = self.http.post(
                    "/api/v1/query_range",
                    data={"query": query, "start": f"{at:.3f}", "end": f"{stop:.3f}",
                          "step": f"{step_s:g}"},
                )  # fmt: skip
            except httpx.HTTPError as exc:
                raise ServiceUnavailable(
                    f"Prometheus at {self.url} did not answer ({type(exc).__name__}: {exc}) "
                    f"to the query {query!r}"
                ) from None
            try:
                body = r.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or body.get("status") != "success":
                reason = (
                    f"{body.get('errorType')}: {body.get('error')}"
                    if isinstance(body, dict) and body.get("error")
                    else f"HTTP {r.status_code}: {r.text[:200]!r}"
                )
                raise ServiceUnavailable(
                    f"Prometheus at {where} refused the query {query!r} ({reason})"
                )
            data = body.get("data") or {}
            if data.get("resultType") != "matrix":
                raise ServiceUnavailable(
                    f"Prometheus at {where} answered the query {query!r} with a "
                    f"{data.get('resultType')!r}, not a range (matrix)"
                )
            out.extend(data.get("result") or [])
            at = stop + step_s
        return out


def _grid(result: list[dict[str, Any]], grid: np.ndarray) -> list[tuple[dict[str, str], Any]]:
    """Each series of a matrix as (labels, values on ``grid``; NaN where it has none)."""
    import numpy as np

    series: dict[tuple[tuple[str, str], ...], np.ndarray] = {}
    labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for item in result:
        metric = dict(item.get("metric") or {})
        key = tuple(sorted(metric.items()))
        values = series.setdefault(key, np.full(len(grid), np.nan))
        labels[key] = metric
        pairs = item.get("values") or []
        if not pairs:
            continue
        stamps = np.array([float(p[0]) for p in pairs])
        at = np.clip(np.searchsorted(grid, stamps - 1e-6), 0, len(grid) - 1)
        ok = np.abs(grid[at] - stamps) < 1e-3
        values[at[ok]] = np.array([float(p[1]) for p in pairs])[ok]
    return [(labels[k], v) for k, v in series.items()]


def _increases(values: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Per-step increase of one counter sampled on the grid: NaN at the first step of each
    stretch the server is up; a series not yet there while the server is up counts from 0; a
    drop (a restart) counts the new value."""
    import numpy as np

    prev = np.concatenate(([np.nan], values[:-1]))
    prev_up = np.concatenate(([False], up[:-1]))
    prev = np.where(np.isnan(prev) & prev_up, 0.0, prev)
    cur = np.where(np.isnan(values) & up, prev, values)  # not there yet, or a missed sample
    cur = np.where(np.isnan(cur) & up, 0.0, cur)
    inc = cur - prev
    inc = np.where(inc < 0, cur, inc)
    inc[~up] = np.nan
    return np.asarray(inc, dtype=float)


def _sum_increases(
    result: list[dict[str, Any]], grid: np.ndarray, up: np.ndarray, keep: Any = None
) -> np.ndarray:
    """The summed per-step increases of the counters of ``result`` (those ``keep`` accepts):
    NaN where the server is down and at the first step of each stretch it is up."""
    import numpy as np

    total = np.zeros(len(grid))
    for labels, values in _grid(result, grid):
        if keep is None or keep(labels):
            total += np.nan_to_num(_increases(values, up))
    starts = up & ~np.concatenate(([False], up[:-1]))
    total[starts | ~up] = np.nan
    return total


def read_prometheus_history(
    model: str,
    url: str,
    since: str | datetime | float | None = None,
    *,
    until: str | datetime | float | None = None,
    step_s: float = 10.0,
    window_s: float | None = None,
    timeout_s: float = 30.0,
) -> pd.DataFrame:
    """The operational history of ``model`` from the Prometheus at ``url``, in the shape of
    :func:`~modelloop.aiops.read_ops_history`: one row per ``step_s`` from ``since`` (default:
    a day ago) to ``until`` (default: now). ``window_s`` (default two steps) is the range of
    the rates, quantiles and maxima; it must hold two scrapes. ServiceUnavailable when
    Prometheus cannot be reached or refuses a query (both named); NotFound when it holds no
    sample of the model in the span."""
    import time

    import numpy as np
    import pandas as pd

    from modelloop.aiops._history import OPS_COLUMNS, parse_since

    check_model_name(model)
    if not (isinstance(step_s, int | float) and math.isfinite(step_s) and step_s >= 0.001):
        raise InvalidInput(f"the Prometheus step must be a positive number of seconds: {step_s!r}")
    start_ts = parse_since(since if since is not None else "1d")
    end_ts = parse_since(until) if until is not None else pd.Timestamp.now(tz="UTC")
    start = math.ceil(start_ts.timestamp() / step_s) * step_s
    end = math.floor(min(end_ts.timestamp(), time.time()) / step_s) * step_s
    if end < start + step_s:
        raise InvalidInput(f"the span from {start_ts} to {end_ts} holds less than one step")
    grid = start + step_s * np.arange(round((end - start) / step_s) + 1)
    queries = prometheus_queries(model, step_s, window_s)
    prom = _Prometheus(url, timeout_s)
    try:
        got = {name: prom.range(q, start, end, step_s) for name, q in queries.items()}
    finally:
        prom.close()
    up_series = _grid(got["up"], grid)
    up = np.zeros(len(grid), dtype=bool)
    for _, values in up_series:
        up |= np.nan_to_num(values) > 0
    if up.sum() < 2:
        raise NotFound(
            f"Prometheus at {url} holds no series of model {model!r} from {start_ts} to "
            f"{end_ts} (query {queries['up']!r}); is it scraping the server's /metrics?"
        )

    def status_class(prefix: str) -> Any:
        return lambda labels: str(labels.get("status", "")).startswith(prefix)

    requests = _sum_increases(got["requests"], grid, up)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(np.round(grid * 1000).astype("int64"), unit="ms", utc=True),
            "model": model,
            "interval_s": float(step_s),
            "requests": requests,
            "errors_4xx": _sum_increases(got["requests"], grid, up, status_class("4")),
            "errors_5xx": _sum_increases(got["requests"], grid, up, status_class("5")),
            "rejected": _sum_increases(got["rejected"], grid, up),
        }
    )
    batch_rows = _sum_increases(got["batch_sum"], grid, up)
    batches = _sum_increases(got["batch_count"], grid, up)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["batch_size"] = np.where(batches > 0, batch_rows / batches, np.nan)
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        values = _one(got[name], grid)
        frame[name] = np.where(np.isfinite(values), values, np.nan)
    frame["queue_depth"] = np.nan_to_num(_one(got["queue_depth"], grid))
    frame["cpu_percent"] = _one(got["cpu_percent"], grid)
    frame["rss_bytes"] = _one(got["rss_bytes"], grid)
    # no traffic in a step: no latency (as in the built-in history)
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        frame.loc[frame["requests"] == 0, name] = np.nan
    frame = frame[up & ~np.isnan(requests)].reset_index(drop=True)
    for name in ("requests", "errors_4xx", "errors_5xx", "rejected", "queue_depth"):
        frame[name] = np.round(frame[name]).astype("int64")
    frame["replica"] = None  # Prometheus already sums the replicas it scrapes
    return frame[list(OPS_COLUMNS)]


def _one(result: list[dict[str, Any]], grid: np.ndarray) -> np.ndarray:
    """The values of an aggregated query (one series, or none: NaN) on the grid."""
    import numpy as np

    series = _grid(result, grid)
    if not series:
        return np.full(len(grid), np.nan)
    return series[0][1]
