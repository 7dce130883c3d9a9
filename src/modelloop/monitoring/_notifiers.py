"""Alert notifiers: the log, a webhook (JSON POST in a background thread), Prometheus gauges.

None of them blocks monitoring: the webhook hands events to a bounded queue served by its own
thread (a full queue drops the event and counts it), retries a bounded number of times with
exponential backoff, and gives up on one request after ``timeout`` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._alerts import AlertEvent, MonitorResult

__all__ = ["LogNotifier", "PrometheusNotifier", "WebhookNotifier"]

log = logging.getLogger("modelloop.monitoring.notifiers")


class LogNotifier:
    """Writes each event to a logger: WARNING when firing, INFO when resolved."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("modelloop.alerts")

    def notify(self, event: AlertEvent) -> None:
        level = logging.WARNING if event.status == "firing" else logging.INFO
        self.logger.log(
            level, "alert %s %s for %s: %s", event.rule, event.status, event.model, event.message
        )


_STOP = object()


class WebhookNotifier:
    """POSTs each event as JSON to ``url`` from a background thread.

    A delivery is tried at most ``1 + max_retries`` times; between tries it waits
    ``backoff * 2**k`` seconds (capped at ``max_backoff``). Connection errors, timeouts, 5xx and
    429 are retried; other 4xx are not. ``notify`` never waits: when ``queue_size`` events are
    already pending, the new one is dropped and counted in ``dropped``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        queue_size: int = 1000,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"webhook url must be http(s)://host/...; got {url!r}")
        if max_retries < 0 or timeout <= 0 or queue_size < 1:
            raise InvalidInput("webhook needs max_retries >= 0, timeout > 0 and queue_size >= 1")
        self.url = url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.headers = {"Content-Type": "application/json", **dict(headers or {})}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.sent = self.failed = self.dropped = self.attempts = 0
        #: why deliveries failed, oldest first (bounded); read and cleared by take_failures()
        self._failures: collections.deque[str] = collections.deque(maxlen=100)

    def notify(self, event: AlertEvent) -> None:
        """Queue the event for delivery and return at once."""
        if self._stop.is_set():
            raise InvalidInput("this webhook notifier is closed")
        self._ensure_thread()
        try:
            self._queue.put_nowait(event.to_dict())
        except queue.Full:
            message = f"webhook queue full: alert {event.rule} for {event.model} dropped"
            with self._lock:
                self.dropped += 1
                self._failures.append(message)
            log.warning(message)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="modelloop-webhook", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            finally:
                self._queue.task_done()

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        tries, reason = 0, ""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.attempts += 1
            tries += 1
            retry, reason = self._post(body)
            if retry is None:
                with self._lock:
                    self.sent += 1
                return
            if not retry or attempt == self.max_retries:
                break
            if self._stop.wait(min(self.backoff * 2**attempt, self.max_backoff)):
                break  # closing: give up the remaining retries
        message = (
            f"alert {payload.get('rule')} ({payload.get('status')}) for {payload.get('model')} "
            f"was not delivered to {self.url} after {tries} tr{'y' if tries == 1 else 'ies'}: "
            f"{reason}"
        )
        with self._lock:
            self.failed += 1
            self._failures.append(message)
        log.warning("webhook: %s", message)

    def take_failures(self) -> list[str]:
        """Why events were not delivered since the last call (HTTP status, connection error, or
        a full queue), one sentence per event; the same sentences go to the log as warnings."""
        with self._lock:
            out = list(self._failures)
            self._failures.clear()
        return out

    def _post(self, body: bytes) -> tuple[bool | None, str]:
        """(None, "") on success, else (whether the failure is worth a retry, why it failed)."""
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
                return None, ""
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code} {exc.reason}".rstrip()
            return exc.code >= 500 or exc.code == 429, why
        except urllib.error.URLError as exc:
            return True, f"connection failed: {exc.reason}"
        except (TimeoutError, OSError) as exc:
            return True, f"connection failed: {exc or type(exc).__name__}"

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the thread."""
        self.flush(timeout)
        self._stop.set()
        thread = self._thread
        if thread is not None:
            # when the queue is full the daemon thread simply ends with the process
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_STOP)
            thread.join(timeout)


class PrometheusNotifier:
    """Prometheus gauges of drift, data quality, live metrics and alert states.

    Gauges live in ``registry`` (a new ``CollectorRegistry`` by default; pass
    ``prometheus_client.REGISTRY`` to expose them on the process's default ``/metrics``).
    """

    def __init__(self, registry: Any = None, namespace: str = "modelloop") -> None:
        try:
            import prometheus_client as pc
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InvalidInput(
                "PrometheusNotifier needs the prometheus-client package (pip install "
                "'modelloop[monitoring]')"
            ) from exc
        self.registry = registry if registry is not None else pc.CollectorRegistry()

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return pc.Gauge(name, doc, labels, namespace=namespace, registry=self.registry)

        self.drift_share = gauge("drift_share", "Share of drifted columns", ["model"])
        self.dataset_drift = gauge("dataset_drift", "1 if the dataset drifted", ["model"])
        self.feature_score = gauge(
            "feature_drift_statistic", "Drift statistic", ["model", "feature", "method"]
        )
        self.feature_drifted = gauge(
            "feature_drifted", "1 if the column drifted", ["model", "feature"]
        )
        self.quality_breaches = gauge("quality_breaches", "Failed data-quality checks", ["model"])
        self.live_metric = gauge("live_metric", "Live metric over the window", ["model", "metric"])
        self.alert_firing = gauge("alert_firing", "1 while the alert fires", ["model", "rule"])
        self._methods: dict[tuple[str, str], str] = {}

    def observe(self, result: MonitorResult) -> None:
        m = result.model
        if result.drift is not None:
            self.drift_share.labels(m).set(result.drift.share_drifted)
            self.dataset_drift.labels(m).set(float(result.drift.dataset_drift))
        outputs = result.prediction_drift.columns if result.prediction_drift else ()
        inputs = result.drift.columns if result.drift else ()
        for c in (*inputs, *outputs):
            # One series per column: when its method changes (KS on small windows, Wasserstein
            # on large ones) or it has no statistic, the previous series must not linger.
            old = self._methods.get((m, c.column))
            if old is not None and (old != c.method or c.statistic is None):
                with contextlib.suppress(KeyError):
                    self.feature_score.remove(m, c.column, old)
                del self._methods[(m, c.column)]
            if c.statistic is not None:
                self.feature_score.labels(m, c.column, c.method).set(c.statistic)
                self._methods[(m, c.column)] = c.method
            self.feature_drifted.labels(m, c.column).set(float(c.drifted))
        if result.quality is not None:
            self.quality_breaches.labels(m).set(len(result.quality.breaches))
        if result.performance is not None:
            for k, v in result.performance.overall.metrics.items():
                if v is not None:
                    self.live_metric.labels(m, k).set(v)
                else:
                    with contextlib.suppress(KeyError):
                        self.live_metric.remove(m, k)

    def notify(self, event: AlertEvent) -> None:
        self.alert_firing.labels(event.model, event.rule).set(
            1.0 if event.status == "firing" else 0.0
        )
