"""The comparison's statistics and signature rules on small data: DeLong's AUC difference and
the paired bootstrap agree with scikit-learn's metrics, their intervals behave as intervals, and
each signature change is called breaking or compatible for the right reason."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as m

from modelloop.models import ColumnSpec, Signature
from modelloop.registry._diff import signature_changes
from modelloop.registry._stats import delong_auc_difference, paired_bootstrap


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a good score and a weaker one (both informative) on 2,000 rows."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 2000)
    good = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1, len(y)))))
    weak = 1 / (1 + np.exp(-(0.6 * (y - 0.5) + rng.normal(0, 1, len(y)))))
    return y, good, weak


def test_delong_matches_scikit_learn_and_excludes_zero_for_a_real_gap(scores) -> None:
    y, good, weak = scores
    delta, interval = delong_auc_difference(y == 1, weak, good)
    assert delta == pytest.approx(m.roc_auc_score(y, good) - m.roc_auc_score(y, weak), abs=1e-12)
    assert interval.method == "DeLong"
    assert 0 < interval.low < delta < interval.high
    # a model compared with itself: no difference and no width
    same, iv = delong_auc_difference(y == 1, good, good)
    assert same == 0 and iv.low == pytest.approx(0, abs=1e-12) and iv.high == pytest.approx(0)
    assert delong_auc_difference(np.zeros(5, bool), good[:5], weak[:5]) is None


def test_delong_counts_ties_half(scores) -> None:
    y, good, _ = scores
    coarse = np.round(good, 1)  # many ties
    delta, _ = delong_auc_difference(y == 1, good, coarse)
    assert delta == pytest.approx(m.roc_auc_score(y, coarse) - m.roc_auc_score(y, good), abs=1e-12)


def test_paired_bootstrap_points_are_scikit_learn_metrics(scores) -> None:
    y, good, weak = scores
    classes = [0, 1]
    pa = np.column_stack([1 - weak, weak])
    pb = np.column_stack([1 - good, good])
    ya, yb = (weak > 0.5).astype(int), (good > 0.5).astype(int)
    out = paired_bootstrap("binary", y, (ya, pa), (yb, pb), classes, resamples=400)
    expected = {
        "accuracy": m.accuracy_score(y, yb) - m.accuracy_score(y, ya),
        "precision": m.precision_score(y, yb) - m.precision_score(y, ya),
        "recall": m.recall_score(y, yb) - m.recall_score(y, ya),
        "f1": m.f1_score(y, yb) - m.f1_score(y, ya),
        "log_loss": m.log_loss(y, pb) - m.log_loss(y, pa),
        "brier": m.brier_score_loss(y, good) - m.brier_score_loss(y, weak),
    }
    assert set(out) == set(expected)
    for name, value in expected.items():
        point, interval = out[name]
        assert point == pytest.approx(value, abs=1e-12), name
        assert interval.low <= point <= interval.high, name
    assert out["accuracy"][1].low > 0  # the better model is clearly more accurate
    assert out["log_loss"][1].high < 0  # and has a clearly lower log loss
    again = paired_bootstrap("binary", y, (ya, pa), (yb, pb), classes, resamples=400)
    assert again["f1"][1] == out["f1"][1]  # seeded: the same interval every time


def test_paired_bootstrap_regression(scores) -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1, 500)
    a, b = y + rng.normal(0, 1.0, 500), y + rng.normal(0, 0.5, 500)
    out = paired_bootstrap("regression", y, (a, None), (b, None), [], resamples=300)
    rmse = np.sqrt(m.mean_squared_error(y, b)) - np.sqrt(m.mean_squared_error(y, a))
    assert out["rmse"][0] == pytest.approx(rmse, abs=1e-12)
    assert out["mae"][0] == pytest.approx(
        m.mean_absolute_error(y, b) - m.mean_absolute_error(y, a), abs=1e-12
    )
    assert out["r2"][0] == pytest.approx(m.r2_score(y, b) - m.r2_score(y, a), abs=1e-12)
    assert out["rmse"][1].high < 0 < out["r2"][1].low


def _sig(*cols: ColumnSpec, classes: tuple = (0, 1)) -> Signature:
    return Signature(inputs=cols, classes=classes, task="classification")


def _changes(a: Signature, b: Signature) -> list[tuple[str, str, bool]]:
    return [(c.column, c.change, c.breaking) for c in signature_changes(a, b)]


def test_signature_rules() -> None:
    x32 = ColumnSpec("x", "int32", False)
    assert _changes(_sig(x32), _sig(ColumnSpec("x", "int64", False))) == [
        ("x", "retyped", False)  # a widening
    ]
    assert _changes(_sig(x32), _sig(ColumnSpec("x", "float64", False))) == [("x", "retyped", False)]
    assert _changes(_sig(ColumnSpec("x", "float64", False)), _sig(x32)) == [("x", "retyped", True)]
    assert _changes(_sig(ColumnSpec("x", "Int32", True)), _sig(x32)) == [
        ("x", "retyped", True),
        ("x", "nullability", True),
    ]
    assert _changes(_sig(x32), _sig(ColumnSpec("x", "int32", True))) == [
        ("x", "nullability", False)
    ]
    colour = ColumnSpec("colour", "string", False, ("blue", "red"), unseen="refuse")
    fewer = ColumnSpec("colour", "string", False, ("blue",), unseen="refuse")
    more = ColumnSpec("colour", "string", False, ("blue", "green", "red"), unseen="refuse")
    accept = ColumnSpec("colour", "string", False, ("blue",), unseen="accept")
    assert _changes(_sig(colour), _sig(fewer)) == [("colour", "categories", True)]
    assert _changes(_sig(colour), _sig(more)) == [("colour", "categories", False)]
    assert _changes(_sig(colour), _sig(accept)) == [("colour", "categories", False)]
    assert _changes(_sig(accept), _sig(colour)) == [("colour", "categories", True)]
    assert _changes(_sig(x32), _sig(x32, colour)) == [("colour", "added", True)]
    assert _changes(_sig(x32, colour), _sig(x32)) == [("colour", "removed", True)]
    assert _changes(_sig(x32), _sig(x32, classes=(0, 1, 2))) == [("classes", "classes", True)]
    assert _changes(_sig(x32, colour), _sig(colour, x32)) == []  # order: requests are by name


def test_paired_bootstrap_of_many_rows_goes_through_a_subsample(scores) -> None:
    y, good, weak = scores
    ya, yb = (weak > 0.5).astype(int), (good > 0.5).astype(int)
    full = paired_bootstrap("binary", y, (ya, None), (yb, None), [0, 1], resamples=2000)
    part = paired_bootstrap(
        "binary", y, (ya, None), (yb, None), [0, 1], resamples=2000, max_rows=500
    )
    point, whole = full["accuracy"]
    same_point, scaled = part["accuracy"]
    assert same_point == point  # the difference itself is always on every row
    assert scaled.method == "paired bootstrap (500-row subsample, scaled)"
    assert scaled.low < point < scaled.high
    # the scaled interval is about as wide as the one from every row
    assert (scaled.high - scaled.low) == pytest.approx(whole.high - whole.low, rel=0.25)
