"""Prometheus metrics of the model server, in one registry per app (no global state)."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["BATCH_SIZE_BUCKETS", "LATENCY_BUCKETS", "ServingMetrics"]

#: Request latency buckets in seconds, 0.5 ms to 10 s.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Micro-batch size buckets in rows: 1, 2, 4, ..., 1024.
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(11))

_PREFIX = "modelloop_serving_"


class ServingMetrics:
    """The server's counters, gauges and histograms; ``render()`` gives the ``/metrics`` body.

    Every method is cheap and thread-safe; labelled children are cached so the request path
    does one dictionary lookup per metric.
    """

    registry: CollectorRegistry

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            ProcessCollector,
        )

        self.registry = reg = CollectorRegistry(auto_describe=True)
        # modelloop_serving_process_cpu_seconds_total, ..._process_resident_memory_bytes, ...:
        # the CPU and RSS of the operational history, for a Prometheus that scrapes the server
        # (modelloop ops --prometheus); per process, so not labelled by model
        ProcessCollector(namespace=_PREFIX.rstrip("_"), registry=reg)
        p = _PREFIX
        self._requests = Counter(
            p + "requests",
            "Prediction requests answered, by model, version, route and HTTP status.",
            ["model", "version", "route", "status"],
            registry=reg,
        )
        self._duration = Histogram(
            p + "request_duration_seconds",
            "Time from receiving a prediction request to answering it.",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._batch = Histogram(
            p + "batch_size",
            "Rows per micro-batch given to the model.",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self._queue = Gauge(
            p + "queue_depth",
            "Rows waiting in a model's queues (champion and challenger).",
            ["model"],
            registry=reg,
        )
        self._rejected = Counter(
            p + "rejected_requests",
            "Requests refused before prediction, by reason (queue_full, too_large, ...).",
            ["model", "reason"],
            registry=reg,
        )
        self._unseen = Counter(
            p + "unseen_categories",
            "Values served although outside their column's categories (columns whose signature "
            "says unseen: accept), by model, version and column: drift as it arrives.",
            ["model", "version", "column"],
            registry=reg,
        )
        self._log_lag = Gauge(
            p + "prediction_log_lag_seconds",
            "Age of the oldest prediction-log row not yet written (0 when none is pending).",
            registry=reg,
        )
        self._log_pending = Gauge(
            p + "prediction_log_pending_rows",
            "Prediction-log rows held in memory, waiting to be written.",
            registry=reg,
        )
        self._log_pending_bytes = Gauge(
            p + "prediction_log_pending_bytes",
            "Estimated memory held by prediction-log rows waiting to be written.",
            registry=reg,
        )
        self._log_max_pending_bytes = Gauge(
            p + "prediction_log_max_pending_bytes",
            "Bound on prediction_log_pending_bytes; rows past it are dropped (and counted).",
            registry=reg,
        )
        self._log_rows = Counter(
            p + "prediction_log_rows", "Prediction-log rows written to segments.", registry=reg
        )
        self._log_errors = Counter(
            p + "prediction_log_errors", "Failed prediction-log segment writes.", registry=reg
        )
        self._log_dropped = Counter(
            p + "prediction_log_dropped_rows",
            "Prediction-log rows dropped (pending rows or bytes over their bound, bad rows, or "
            "unwritten at shutdown).",
            registry=reg,
        )
        # the spool of a shared log root (MODELLOOP_LOG_ROOT) while it cannot be written
        self._spool_bytes = Gauge(
            p + "log_spool_bytes", "Bytes of log segments spooled, not yet uploaded.", registry=reg
        )
        self._spool_segments = Gauge(
            p + "log_spool_segments", "Log segments spooled, not yet uploaded.", registry=reg
        )
        self._spool_max_bytes = Gauge(
            p + "log_spool_max_bytes",
            "Bound on log_spool_bytes; rows past it are dropped (and counted).",
            registry=reg,
        )
        self._spool_dropped = Counter(
            p + "log_spool_dropped_rows",
            "Log rows dropped because the spool was full while the log root was unreachable.",
            registry=reg,
        )
        self._upload_errors = Counter(
            p + "log_upload_errors", "Failed uploads of log segments to the log root.", registry=reg
        )
        self._feedback = Counter(
            p + "feedback_labels",
            "Feedback labels by how their request id was checked: verified (answered here), "
            "unverified (not known here: answered before this process, elsewhere, or "
            "forgotten) or refused (ids this server made and never answered).",
            ["model", "check"],
            registry=reg,
        )
        self._version = Gauge(
            p + "model_version",
            "Registry version number served per model and route (NaN if not a number).",
            ["model", "route"],
            registry=reg,
        )
        self._refused = Gauge(
            p + "refused_version",
            "Version an alias names that could not be loaded (a refused package, a failed load) "
            "while the route keeps serving its previous version; absent when none is.",
            ["model", "route"],
            registry=reg,
        )
        self._ready = Gauge(p + "ready", "1 when the server is ready for traffic.", registry=reg)
        self._children: dict[tuple[Any, ...], Any] = {}
        #: the operational history recorder (modelloop.aiops.OpsRecorder), fed the same events
        self.ops: Any = None

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def request(self, model: str, version: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency."""
        self._child(self._requests, model, str(version), route, str(status)).inc()
        self._child(self._duration, model, route).observe(seconds)
        if self.ops is not None:
            self.ops.request(model, route, status, seconds)

    def batch(self, model: str, version: str, size: int) -> None:
        """Record the size of one micro-batch."""
        self._child(self._batch, model, str(version)).observe(size)
        if self.ops is not None:
            self.ops.batch(model, size)

    def queue_depth(self, model: str, depth: int) -> None:
        """Set the number of requests waiting for ``model``."""
        self._child(self._queue, model).set(depth)
        if self.ops is not None:
            self.ops.queue_depth(model, depth)

    def rejected(self, model: str, reason: str) -> None:
        """Count one request refused for ``reason`` (``queue_full``, ``too_large``, ...)."""
        self._child(self._rejected, model, reason).inc()
        if self.ops is not None:
            self.ops.rejected(model, reason)

    def feedback(self, model: str, check: str, labels: int) -> None:
        """Count ``labels`` feedback labels of ``model`` by ``check``."""
        self._child(self._feedback, model, check).inc(labels)

    def unseen_category(self, model: str, version: str, column: str, values: int) -> None:
        """Count ``values`` of ``column`` served although outside its categories."""
        self._child(self._unseen, model, str(version), column).inc(values)

    def log_written(self, rows: int) -> None:
        """Count prediction-log rows written."""
        self._log_rows.inc(rows)

    def log_error(self) -> None:
        """Count one failed prediction-log write."""
        self._log_errors.inc()

    def log_dropped(self, rows: int) -> None:
        """Count prediction-log rows that will never be written."""
        self._log_dropped.inc(rows)

    def log_state(
        self, pending_rows: int, lag_seconds: float, pending_bytes: int | None = None
    ) -> None:
        """Set the prediction log's pending rows, lag and (estimated) pending bytes."""
        self._log_pending.set(pending_rows)
        self._log_lag.set(lag_seconds)
        if pending_bytes is not None:
            self._log_pending_bytes.set(pending_bytes)

    def log_spool(self, spool_bytes: int, segments: int) -> None:
        """Set the bytes and segments waiting in the log spool."""
        self._spool_bytes.set(spool_bytes)
        self._spool_segments.set(segments)

    def log_spool_bounds(self, max_bytes: int) -> None:
        """Set the bound on the log spool's bytes."""
        self._spool_max_bytes.set(max_bytes)

    def log_spool_dropped(self, rows: int) -> None:
        """Count log rows dropped at a full spool."""
        self._spool_dropped.inc(rows)

    def log_upload_error(self) -> None:
        """Count one failed upload to the log root."""
        self._upload_errors.inc()

    def log_bounds(self, max_pending_bytes: int) -> None:
        """Set the bound on the prediction log's pending bytes."""
        self._log_max_pending_bytes.set(max_pending_bytes)

    def model_loaded(self, model: str, route: str, version: str) -> None:
        """Record that ``route`` of ``model`` now serves ``version``."""
        try:
            value = float(int(version))
        except (TypeError, ValueError):
            value = math.nan
        self._child(self._version, model, route).set(value)

    def model_unloaded(self, model: str, route: str) -> None:
        """Forget ``route`` of ``model`` (e.g. a challenger removed)."""
        self._children.pop((id(self._version), model, route), None)
        with contextlib.suppress(KeyError):
            self._version.remove(model, route)

    def model_refused(self, model: str, route: str, version: str | None) -> None:
        """Record that ``route`` of ``model`` could not switch to ``version`` (None: it no
        longer has a refused version)."""
        if version is None:
            with contextlib.suppress(KeyError):
                self._refused.remove(model, route)
            return
        try:
            value = float(int(version))
        except (TypeError, ValueError):
            value = math.nan
        self._refused.labels(model, route).set(value)

    def ready(self, ready: bool) -> None:
        """Set readiness (1 ready, 0 not)."""
        self._ready.set(1 if ready else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for ``GET /metrics``."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
