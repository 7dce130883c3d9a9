"""Alert rules evaluated on every monitoring result, with state so an alert fires once and resolves.

A rule looks at a :class:`MonitorResult` and says whether its condition holds. The
:class:`AlertManager` keeps one :class:`AlertState` per (model, rule) in an
:class:`AlertStateStore` and emits an :class:`AlertEvent` only on a change: ``firing`` when the
condition starts to hold, ``resolved`` when it stops. Events go to notifiers; a notifier that fails
is logged and never stops monitoring.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._calibration import CalibratedDrift
from modelloop.monitoring._performance import CLASSIFICATION, REGRESSION, PerformanceReport
from modelloop.monitoring._quality import QualityReport
from modelloop.monitoring._result import DriftResult
from modelloop.monitoring._versions import VersionWindow

__all__ = [
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStateStore",
    "Condition",
    "DriftShareAbove",
    "FeatureDrifted",
    "InMemoryAlertStateStore",
    "MetricAbove",
    "MetricBelow",
    "MonitorResult",
    "QualityBreach",
]

log = logging.getLogger("modelloop.monitoring.alerts")
#: The live metrics a metric rule may watch: classification first, then regression.
LIVE_METRICS = (*CLASSIFICATION, *REGRESSION)
FIRING, RESOLVED = "firing", "resolved"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class MonitorResult:
    """One monitoring run of a model: any of drift, data quality and live performance.

    ``drift`` and ``quality`` are about the inputs of every served row, against the monitored
    version's reference. ``versions`` hold each served version's rows, output drift against its
    own reference and live metrics of its own labelled rows; ``prediction_drift`` is the monitored
    version's entry (None when it served no row of the window). ``performance`` is over every
    labelled row, with per-version rows among its groups.
    """

    model: str
    drift: DriftResult | None = None  # of the inputs: the dataset verdict
    quality: QualityReport | None = None
    performance: PerformanceReport | None = None
    window: Mapping[str, Any] = field(default_factory=dict)
    timestamp: int = 0  # epoch milliseconds
    prediction_drift: DriftResult | None = None  # of the monitored version's outputs
    versions: tuple[VersionWindow, ...] = ()
    #: the inputs judged against the version's history-calibrated normal ranges (opt-in)
    calibrated: CalibratedDrift | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", MappingProxyType(dict(self.window)))
        object.__setattr__(self, "versions", tuple(self.versions))

    def version(self, number: int) -> VersionWindow:
        """The part of the window served by version ``number``."""
        for v in self.versions:
            if v.version == number:
                return v
        held = ", ".join(f"v{v.version}" for v in self.versions) or "none"
        raise InvalidInput(f"version {number} served no row of this window (it holds {held})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "timestamp": self.timestamp,
            "window": dict(self.window),
            "drift": self.drift.to_dict() if self.drift else None,
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift else None,
            "quality": self.quality.to_dict() if self.quality else None,
            "performance": self.performance.to_dict() if self.performance else None,
            "versions": [v.to_dict() for v in self.versions],
            "calibrated": self.calibrated.to_dict() if self.calibrated else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitorResult:
        return cls(
            model=d["model"],
            timestamp=int(d.get("timestamp", 0)),
            window=dict(d.get("window") or {}),
            drift=DriftResult.from_dict(d["drift"]) if d.get("drift") else None,
            prediction_drift=(
                DriftResult.from_dict(d["prediction_drift"]) if d.get("prediction_drift") else None
            ),
            quality=QualityReport.from_dict(d["quality"]) if d.get("quality") else None,
            performance=(
                PerformanceReport.from_dict(d["performance"]) if d.get("performance") else None
            ),
            versions=tuple(VersionWindow.from_dict(v) for v in d.get("versions") or ()),
            calibrated=(
                CalibratedDrift.from_dict(d["calibrated"]) if d.get("calibrated") else None
            ),
        )


@dataclass(frozen=True)
class Condition:
    """What a rule saw: whether it holds, the value it looked at, and a sentence for humans."""

    firing: bool
    value: float | None
    message: str


class AlertRule(abc.ABC):
    """A named condition on a :class:`MonitorResult`. Names are unique within a manager."""

    name: str

    @abc.abstractmethod
    def evaluate(self, result: MonitorResult) -> Condition | None:
        """The condition, or None when the result lacks what the rule needs (state is kept)."""


class DriftShareAbove(AlertRule):
    """Fires when the share of drifted input columns reaches ``threshold`` (the same rule as the
    dataset verdict of :class:`DriftResult`)."""

    def __init__(self, threshold: float = 0.5, name: str | None = None) -> None:
        self.threshold = threshold
        self.name = name or f"drift_share_above_{threshold:g}"

    def evaluate(self, result: MonitorResult) -> Condition | None:
        if result.drift is None:
            return None
        share = result.drift.share_drifted
        names = ", ".join(result.drift.drifted_columns) or "none"
        return Condition(
            share >= self.threshold,
            share,
            f"{share:.0%} of columns drifted ({names}); threshold {self.threshold:.0%}",
        )


class FeatureDrifted(AlertRule):
    """Fires while the named column is drifted."""

    def __init__(self, column: str, name: str | None = None) -> None:
        self.column = column
        self.name = name or f"feature_drifted_{column}"

    def evaluate(self, result: MonitorResult) -> Condition | None:
        if result.drift is None:
            return None
        col = next((c for c in result.drift.columns if c.column == self.column), None)
        if col is None:
            return None
        return Condition(
            col.drifted,
            col.statistic,
            f"column {self.column!r} {'drifted' if col.drifted else 'is stable'}: "
            f"{col.method} = {col.statistic}",
        )


class _MetricRule(AlertRule):
    above: bool

    def __init__(
        self,
        metric: str,
        threshold: float,
        group: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        if metric not in LIVE_METRICS:
            raise InvalidInput(
                f"unknown live metric {metric!r}; known metrics: {', '.join(LIVE_METRICS)} "
                f"(classification: {', '.join(CLASSIFICATION)}; regression: "
                f"{', '.join(REGRESSION)})"
            )
        self.metric = metric
        self.threshold = threshold
        self.group = dict(group or {})
        where = "".join(f"_{k}={v}" for k, v in sorted(self.group.items()))
        side = "above" if self.above else "below"
        self.name = name or f"{metric}_{side}_{threshold:g}{where}"

    def evaluate(self, result: MonitorResult) -> Condition | None:
        perf = result.performance
        if perf is None:
            return None
        try:
            value = perf.metric(self.metric, **self.group)
        except InvalidInput:
            return None
        if value is None:
            return None
        firing = value > self.threshold if self.above else value < self.threshold
        where = f" for {self.group}" if self.group else ""
        return Condition(
            firing, value, f"{self.metric}{where} is {value:.4g} (threshold {self.threshold:g})"
        )


class MetricBelow(_MetricRule):
    """Fires when a live metric (overall, or of one ``group``) is below ``threshold``."""

    above = False


class MetricAbove(_MetricRule):
    """Fires when a live metric (e.g. ``mae``) is above ``threshold``."""

    above = True


class QualityBreach(AlertRule):
    """Fires when a data-quality check failed (optionally only for a ``column`` or an ``issue``)."""

    def __init__(
        self, column: str | None = None, issue: str | None = None, name: str | None = None
    ) -> None:
        self.column = column
        self.issue = issue
        self.name = name or "quality_breach" + (f"_{column}" if column else "") + (
            f"_{issue}" if issue else ""
        )

    def evaluate(self, result: MonitorResult) -> Condition | None:
        if result.quality is None:
            return None
        # the inputs of every row, then each version's outputs against its own reference
        found = [(c, c, i) for c, i in result.quality.breaches]
        for v in result.versions:
            if v.output_quality is not None:
                found += [(f"{c} (v{v.version})", c, i) for c, i in v.output_quality.breaches]
        hits = [
            (shown, i)
            for shown, c, i in found
            if (self.column is None or c == self.column) and (self.issue is None or i == self.issue)
        ]
        text = ", ".join(f"{c}: {i}" for c, i in hits) or "no breach"
        return Condition(bool(hits), float(len(hits)), f"data quality: {text}")


@dataclass(frozen=True)
class AlertState:
    """The stored state of one rule for one model."""

    model: str
    rule: str
    firing: bool
    since: int  # epoch ms of the last change
    updated_at: int
    value: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AlertEvent:
    """A change of an alert: ``status`` is ``"firing"`` or ``"resolved"``."""

    model: str
    rule: str
    status: str
    value: float | None
    message: str
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertStateStore(abc.ABC):
    """Where alert states live. Contract: every method is atomic and safe to call from threads."""

    @abc.abstractmethod
    def get(self, model: str, rule: str) -> AlertState | None:
        """The state of ``rule`` for ``model``, or None if it never ran."""

    @abc.abstractmethod
    def put(self, state: AlertState) -> None:
        """Insert or replace the state of (state.model, state.rule)."""

    @abc.abstractmethod
    def list(self, model: str | None = None, firing_only: bool = False) -> list[AlertState]:
        """States, ordered by model then rule."""

    @abc.abstractmethod
    def transition(self, state: AlertState) -> bool:
        """Apply a freshly evaluated state atomically; return whether the alert changed.

        It changed when nothing was stored and ``state`` fires, or when the stored ``firing``
        differs: then ``state`` is stored as given (``since`` = its ``updated_at``). Otherwise
        value, message and ``updated_at`` are updated and the stored ``since`` is kept. A state
        older than the stored one is ignored. Two evaluations racing on one alert see exactly one
        change.
        """


class InMemoryAlertStateStore(AlertStateStore):
    """Alert states in a dict guarded by a lock (lost when the process ends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], AlertState] = {}

    def get(self, model: str, rule: str) -> AlertState | None:
        with self._lock:
            return self._states.get((model, rule))

    def put(self, state: AlertState) -> None:
        with self._lock:
            self._states[(state.model, state.rule)] = state

    def transition(self, state: AlertState) -> bool:
        key = (state.model, state.rule)
        with self._lock:
            prev = self._states.get(key)
            if prev is not None and state.updated_at < prev.updated_at:
                return False  # an older evaluation arriving late never overrides a newer one
            changed = (prev.firing if prev is not None else False) != state.firing
            if prev is not None and not changed:
                state = replace(state, since=prev.since)
            self._states[key] = state
            return changed

    def list(self, model: str | None = None, firing_only: bool = False) -> list[AlertState]:
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: (s.model, s.rule))
        return [
            s
            for s in states
            if (model is None or s.model == model) and (not firing_only or s.firing)
        ]


class AlertManager:
    """Evaluate rules on each result, keep their state, notify on changes only.

    Notifiers are objects with ``notify(event)``; those that also have ``observe(result)``
    (e.g. Prometheus gauges) get every result. Their errors are logged, never raised.
    """

    def __init__(
        self,
        rules: Iterable[AlertRule],
        *,
        store: AlertStateStore | None = None,
        notifiers: Iterable[Any] = (),
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.rules = list(rules)
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"alert rule names must be unique; repeated: {dupes}")
        self.store = store if store is not None else InMemoryAlertStateStore()
        self.notifiers = list(notifiers)
        self.clock = clock

    def evaluate(self, result: MonitorResult) -> list[AlertEvent]:
        """Apply every rule to ``result``; return (and send) the events of changed alerts."""
        now = result.timestamp or self.clock()
        events: list[AlertEvent] = []
        for rule in self.rules:
            try:
                cond = rule.evaluate(result)
            except Exception:  # a broken rule must not stop the others
                log.exception("alert rule %s failed", rule.name)
                continue
            if cond is None:
                continue
            state = AlertState(
                result.model, rule.name, cond.firing, now, now, cond.value, cond.message
            )
            if self.store.transition(state):  # atomic: racing evaluations announce once
                status = FIRING if cond.firing else RESOLVED
                events.append(
                    AlertEvent(result.model, rule.name, status, cond.value, cond.message, now)
                )
        for n in self.notifiers:
            observe = getattr(n, "observe", None)
            if observe is not None:
                self._safely(observe, result)
            for e in events:
                self._safely(n.notify, e)
        return events

    @staticmethod
    def _safely(fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("notifier %r failed", fn)

    def firing(self, model: str | None = None) -> list[AlertState]:
        return self.store.list(model, firing_only=True)
