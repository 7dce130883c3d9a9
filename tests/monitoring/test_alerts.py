"""Alert rules and state: fire once while the condition holds, resolve when it clears."""

from __future__ import annotations

import json
import logging

import pytest

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    AlertManager,
    DriftShareAbove,
    FeatureDrifted,
    InMemoryAlertStateStore,
    LogNotifier,
    MetricAbove,
    MetricBelow,
    MetricRow,
    MonitorResult,
    PerformanceReport,
    PrometheusNotifier,
    QualityBreach,
)

RULES = [
    DriftShareAbove(0.4),
    FeatureDrifted("a"),
    MetricBelow("accuracy", 0.8),
    QualityBreach(issue="unseen_categories"),
]


def test_alerts_fire_once_and_resolve(make_result) -> None:  # type: ignore[no-untyped-def]
    store = InMemoryAlertStateStore()
    mgr = AlertManager(RULES, store=store)
    assert mgr.evaluate(make_result(set(), 0.9, ts=1)) == []  # healthy first run: no event
    bad = make_result({"a", "b", "c"}, 0.7, unseen=True, ts=2)
    events = mgr.evaluate(bad)
    assert {(e.rule, e.status) for e in events} == {
        ("drift_share_above_0.4", "firing"),
        ("feature_drifted_a", "firing"),
        ("accuracy_below_0.8", "firing"),
        ("quality_breach_unseen_categories", "firing"),
    }
    assert mgr.evaluate(make_result({"a", "b", "c"}, 0.7, unseen=True, ts=3)) == []  # not repeated
    assert len(mgr.firing("flights")) == 4
    assert store.get("flights", "feature_drifted_a").since == 2  # since the first firing
    partly = mgr.evaluate(make_result({"a"}, 0.85, ts=4))
    assert {(e.rule, e.status) for e in partly} == {
        ("drift_share_above_0.4", "resolved"),
        ("accuracy_below_0.8", "resolved"),
        ("quality_breach_unseen_categories", "resolved"),
    }
    assert [s.rule for s in mgr.firing()] == ["feature_drifted_a"]
    again = mgr.evaluate(make_result({"a", "b", "c"}, 0.9, ts=5))
    assert [(e.rule, e.status, e.timestamp) for e in again] == [
        ("drift_share_above_0.4", "firing", 5)
    ]
    assert json.loads(json.dumps(again[0].to_dict()))["status"] == "firing"


def test_rules_without_their_input_keep_state(make_result) -> None:  # type: ignore[no-untyped-def]
    mgr = AlertManager(RULES)
    mgr.evaluate(make_result({"a", "b"}, 0.5, ts=1))
    empty = MonitorResult("flights", timestamp=2)
    assert mgr.evaluate(empty) == [] and len(mgr.firing()) == 3


def test_metric_above_and_group_rules() -> None:
    perf = PerformanceReport(
        "regression",
        MetricRow({}, 10, {"mae": 2.0, "rmse": 3.0}),
        (MetricRow({"carrier": "UA"}, 5, {"mae": 4.0, "rmse": 5.0}),),
        keys=("carrier",),
    )
    res = MonitorResult("m", performance=perf, timestamp=1)
    mgr = AlertManager([MetricAbove("mae", 3.0), MetricAbove("mae", 3.0, group={"carrier": "UA"})])
    assert [e.rule for e in mgr.evaluate(res)] == ["mae_above_3_carrier=UA"]


def test_duplicate_rule_names_and_broken_notifiers(make_result) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="unique"):
        AlertManager([FeatureDrifted("a"), FeatureDrifted("a")])

    class Broken:
        def notify(self, event):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    mgr = AlertManager([FeatureDrifted("a")], notifiers=[Broken()])
    assert len(mgr.evaluate(make_result({"a"}, 0.9, ts=1))) == 1  # monitoring goes on


def test_log_notifier(caplog: pytest.LogCaptureFixture, make_result) -> None:  # type: ignore[no-untyped-def]
    mgr = AlertManager([FeatureDrifted("a")], notifiers=[LogNotifier()])
    with caplog.at_level(logging.INFO, logger="modelloop.alerts"):
        mgr.evaluate(make_result({"a"}, 0.9, ts=1))
        mgr.evaluate(make_result(set(), 0.9, ts=2))
    msgs = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "modelloop.alerts"]
    assert msgs[0][0] == "WARNING" and "feature_drifted_a firing for flights" in msgs[0][1]
    assert msgs[1][0] == "INFO" and "resolved" in msgs[1][1]


def test_prometheus_gauges(make_result) -> None:  # type: ignore[no-untyped-def]
    prom = PrometheusNotifier()
    mgr = AlertManager([FeatureDrifted("a")], notifiers=[prom])
    mgr.evaluate(make_result({"a", "b"}, 0.75, ts=1))
    get = prom.registry.get_sample_value
    assert get("modelloop_drift_share", {"model": "flights"}) == 0.5
    assert get("modelloop_feature_drifted", {"model": "flights", "feature": "b"}) == 1.0
    assert (
        get(
            "modelloop_feature_drift_statistic",
            {"model": "flights", "feature": "a", "method": "wasserstein"},
        )
        == 0.5
    )
    assert get("modelloop_live_metric", {"model": "flights", "metric": "accuracy"}) == 0.75
    assert get("modelloop_alert_firing", {"model": "flights", "rule": "feature_drifted_a"}) == 1.0
    mgr.evaluate(make_result(set(), 0.9, ts=2))
    assert get("modelloop_alert_firing", {"model": "flights", "rule": "feature_drifted_a"}) == 0.0
    assert get("modelloop_quality_breaches", {"model": "flights"}) == 0.0


def test_monitor_result_round_trips(make_result) -> None:  # type: ignore[no-untyped-def]
    r = make_result({"a"}, 0.7, unseen=True, ts=9)
    assert MonitorResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_prometheus_drops_series_of_a_method_no_longer_used() -> None:
    from modelloop.monitoring import ColumnDrift, DriftResult

    def result(method: str, stat: float | None) -> MonitorResult:
        col = ColumnDrift("x", "numeric", method, stat, None, 0.1, False)
        return MonitorResult("m", DriftResult((col,), 10, 10, 0.05, "benjamini-hochberg", 0.5))

    prom = PrometheusNotifier()
    get = prom.registry.get_sample_value
    labels = {"model": "m", "feature": "x"}
    prom.observe(result("ks", 0.2))
    assert get("modelloop_feature_drift_statistic", {**labels, "method": "ks"}) == 0.2
    prom.observe(result("wasserstein", 0.05))
    assert get("modelloop_feature_drift_statistic", {**labels, "method": "ks"}) is None
    assert get("modelloop_feature_drift_statistic", {**labels, "method": "wasserstein"}) == 0.05
    prom.observe(result("wasserstein", None))  # no data for the column in this window
    assert get("modelloop_feature_drift_statistic", {**labels, "method": "wasserstein"}) is None
