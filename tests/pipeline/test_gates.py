"""Promotion gates: parsing, absolute thresholds, champion comparisons and failure reasons."""

from __future__ import annotations

import pytest

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._gates import Gate, evaluate_gates, parse_gate


def test_parse_absolute_and_champion_gates() -> None:
    assert parse_gate("auc >= 0.70") == Gate("auc >= 0.70", "auc", ">=", 0.70, False, 0.0)
    assert parse_gate(" p95_latency_ms<=20 ").threshold == 20.0
    g = parse_gate("auc >= champion - 0.005")
    assert (g.metric, g.op, g.threshold, g.against_champion, g.offset, g.scale) == (
        "auc",
        ">=",
        None,
        True,
        -0.005,
        1.0,
    )
    assert parse_gate("rmse <= champion * 1.05").scale == 1.05
    assert parse_gate("auc > champion").offset == 0.0
    assert parse_gate("auc >= champion + 1e-3").offset == 0.001


@pytest.mark.parametrize(
    "expr",
    ["auc", "auc => 0.7", "auc >= ", ">= 0.7", "auc >= champ - 0.1", "auc >= 0.7 extra", "1 < 2"],
)
def test_malformed_gate_names_the_expression(expr: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_gate(expr)
    assert repr(expr) in str(err.value)


def test_absolute_thresholds_pass_and_fail() -> None:
    gates = [parse_gate(e) for e in ("auc >= 0.70", "segment_gap <= 0.10", "p95_latency_ms <= 20")]
    results = evaluate_gates(gates, {"auc": 0.75, "segment_gap": 0.12, "p95_latency_ms": 4.0}, None)
    assert [r.passed for r in results] == [True, False, True]
    assert results[1].value == 0.12 and results[1].bound == 0.10
    assert "segment_gap = 0.12" in results[1].reason and "failed" in results[1].reason
    assert results[0].to_dict()["expr"] == "auc >= 0.70"


def test_gate_against_champion() -> None:
    gate = parse_gate("auc >= champion - 0.005")
    ok = evaluate_gates([gate], {"auc": 0.798}, {"auc": 0.80})[0]
    assert ok.passed and ok.bound == pytest.approx(0.795)
    assert "champion 0.8" in ok.reason
    bad = evaluate_gates([gate], {"auc": 0.79}, {"auc": 0.80})[0]
    assert not bad.passed and bad.bound == pytest.approx(0.795)
    scaled = evaluate_gates([parse_gate("rmse <= champion * 1.05")], {"rmse": 11.0}, {"rmse": 10})
    assert not scaled[0].passed and scaled[0].bound == pytest.approx(10.5)


def test_champion_gate_without_champion_passes() -> None:
    result = evaluate_gates([parse_gate("auc >= champion - 0.005")], {"auc": 0.5}, None)[0]
    assert result.passed and result.reason == "no champion yet" and result.bound is None
    missing = evaluate_gates([parse_gate("auc >= champion")], {"auc": 0.5}, {"rmse": 1.0})[0]
    assert missing.passed and "champion has no value for 'auc'" in missing.reason


def test_unknown_or_missing_metric_fails_and_lists_available() -> None:
    results = evaluate_gates(
        [parse_gate("aucc >= 0.7"), parse_gate("log_loss <= 1")],
        {"auc": 0.9, "accuracy": 0.8, "log_loss": float("nan")},
        {"aucc": 1.0},
    )
    assert not results[0].passed and results[0].value is None
    assert "'aucc'" in results[0].reason and "available metrics: accuracy, auc" in results[0].reason
    assert not results[1].passed and "not a finite number" in results[1].reason
