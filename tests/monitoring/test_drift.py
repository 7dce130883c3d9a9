"""Dataset-level drift: defaults on the benchmark workload, false-positive rate, corrections."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import clone

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    DriftMonitor,
    DriftResult,
    KSDetector,
    ReferenceProfile,
    WindowAccumulator,
    adjust_p_values,
    detect_drift,
    prediction_frame,
    summarize,
)


def test_defaults_find_exactly_the_four_drifted_columns(workload, workload_frames) -> None:
    ref, cur = workload_frames
    result = DriftMonitor().fit(ReferenceProfile.from_frame(ref)).test(cur)
    assert set(result.drifted_columns) == workload.DRIFTED
    assert {c.method for c in result.columns} == {"ks_effect", "tv_effect"}
    num_0 = result["num_0"]  # each verdict states its rule, threshold and numbers
    assert num_0.min_effect == 0.02 and num_0.ci_low > 0.02 and num_0.verdict == "drifted"
    assert "lower bound" in num_0.rule and "negligible effect 0.02" in num_0.rule
    assert result.share_drifted == pytest.approx(4 / 25) and not result.dataset_drift
    assert DriftMonitor(drift_share=0.1).fit(ref).test(cur).dataset_drift


@pytest.mark.parametrize("numeric", ["ks", "psi", "wasserstein"])
def test_every_method_finds_the_four_drifted_columns(workload, workload_frames, numeric) -> None:
    ref, cur = workload_frames
    cat = "chi2" if numeric == "ks" else "jensenshannon"
    result = detect_drift(
        ReferenceProfile.from_frame(ref), cur, numeric_method=numeric, categorical_method=cat
    )
    assert set(result.drifted_columns) == workload.DRIFTED


def test_result_round_trips_through_json(workload_frames) -> None:
    ref, cur = workload_frames
    result = DriftMonitor(numeric_method="ks", categorical_method="chi2").fit(ref)
    r = result.test(cur)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert DriftResult.from_dict(d) == r
    assert d["correction"] == "benjamini-hochberg" and d["drifted_columns"] == list(
        r.drifted_columns
    )
    assert all(c.adjusted_p_value is not None for c in r.columns)


def test_no_drift_between_halves_false_positive_rate(workload) -> None:
    """Halves of one shuffled sample: the default minimum-effect tests with BH at 0.05.

    Under no drift, BH keeps P(any column flagged) <= alpha per run. Over 50 runs the number of
    runs with a flag is Binomial(50, <=0.05): P(X >= 9) < 0.002, so we assert at most 8.
    """
    pool, _ = workload.make_frames(60_000)
    rng = np.random.default_rng(11)
    runs_with_flags = 0
    raw_flags = 0
    for _ in range(50):
        idx = rng.permutation(len(pool))[:4_000]
        a, b = pool.iloc[idx[:2_000]], pool.iloc[idx[2_000:]]
        r = DriftMonitor().fit(a).test(b)
        assert {c.method for c in r.columns} == {"ks_effect", "tv_effect"}
        runs_with_flags += bool(r.drifted_columns)
        raw_flags += sum(c.p_value < 0.05 for c in r.columns)
    assert runs_with_flags <= 8
    # uncorrected per-column rate, 1250 tests: mean <= 0.05, so 0.05 + 3 sd is a safe bound
    assert raw_flags / 1250 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1250)


def test_no_drift_between_large_halves_with_default_scores(workload) -> None:
    pool, _ = workload.make_frames(100_000)
    rng = np.random.default_rng(12)
    for _ in range(5):
        idx = rng.permutation(len(pool))
        r = DriftMonitor().fit(pool.iloc[idx[:50_000]]).test(pool.iloc[idx[50_000:]])
        assert r.drifted_columns == ()
        assert max(c.statistic for c in r.columns) < 0.03  # far below the 0.1 thresholds


def test_streaming_accumulator_equals_one_pass(workload_frames) -> None:
    ref, cur = workload_frames
    prof = ReferenceProfile.from_frame(ref)
    acc = WindowAccumulator(prof)
    table = pa.Table.from_pandas(cur, preserve_index=False)
    for batch in table.to_batches(max_chunksize=7_000):
        acc.update(batch)
    assert acc.n_batches == 5 and acc.n_rows == len(cur)
    whole = summarize(prof, cur)
    mon = DriftMonitor(numeric_method="ks", categorical_method="chi2").fit(prof)
    assert mon.test(acc) == mon.test(whole) == mon.test(cur)
    for name, s in whole.columns.items():
        t = acc.summary().columns[name]
        assert s.count == t.count and s.missing == t.missing
        if s.kind == "numeric":
            np.testing.assert_array_equal(s.le, t.le)
            assert s.mean == pytest.approx(t.mean) and s.std == pytest.approx(cur[name].std())
        else:
            assert dict(s.categories) == dict(t.categories)


def test_corrections_match_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adjust_p_values(p, "none"), p)
    with pytest.raises(InvalidInput, match="unknown correction"):
        adjust_p_values(p, "bonferroni")


def test_holm_is_stricter_than_bh(workload_frames) -> None:
    ref, cur = workload_frames
    kw = {"numeric_method": "ks", "categorical_method": "chi2"}
    bh = DriftMonitor(**kw).fit(ref).test(cur)
    holm = DriftMonitor(correction="holm", **kw).fit(ref).test(cur)
    assert holm.correction == "holm"
    for a, b in zip(bh.columns, holm.columns, strict=True):
        assert b.adjusted_p_value >= a.adjusted_p_value - 1e-15


def test_monitor_settings_are_checked() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]})
    with pytest.raises(InvalidInput, match="does not apply"):
        DriftMonitor(methods={"c": "ks"}).fit(df).test(df)
    with pytest.raises(InvalidInput, match="not monitored"):
        DriftMonitor(columns=["x"], methods={"c": "chi2"}).fit(df)
    with pytest.raises(InvalidInput, match="not fitted"):
        DriftMonitor().test(df)
    with pytest.raises(InvalidInput, match="alpha"):
        DriftMonitor(alpha=2).fit(df)
    r = DriftMonitor(methods={"x": KSDetector(alpha=0.2)}).fit(df).test(df)
    assert r["x"].threshold == 0.2 and r["x"].method == "ks"
    mon = DriftMonitor(alpha=0.01, numeric_method="psi").fit(df)
    twin = clone(mon)  # scikit-learn's clone: same settings, nothing learned
    assert twin.get_params() == mon.get_params() and not hasattr(twin, "profile_")


def test_prediction_drift_on_labels_and_probabilities() -> None:
    rng = np.random.default_rng(9)
    p_ref = rng.beta(2, 5, 20_000)
    p_cur = rng.beta(3, 4, 20_000)  # the model now predicts the positive class more often
    ref = prediction_frame((p_ref > 0.5).astype(int), np.c_[1 - p_ref, p_ref], classes=[0, 1])
    cur = prediction_frame((p_cur > 0.5).astype(int), np.c_[1 - p_cur, p_cur], classes=[0, 1])
    assert list(ref.columns) == ["prediction", "proba_0", "proba_1"]
    r = DriftMonitor().fit(ref).test(cur)
    assert r["prediction"].kind == "categorical"
    assert set(r.drifted_columns) == {"prediction", "proba_0", "proba_1"}
    same = DriftMonitor().fit(ref).test(ref)
    assert same.drifted_columns == ()
    reg = prediction_frame(rng.normal(size=100), task="regression")
    assert reg["prediction"].dtype == np.float64
    with pytest.raises(InvalidInput, match="rows of probabilities"):
        prediction_frame([1, 0], [[0.5, 0.5]])
