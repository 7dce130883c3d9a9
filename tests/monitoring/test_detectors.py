"""Detector statistics against scipy on the same raw data, and the estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.base import clone

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    ChiSquareDetector,
    JensenShannonDetector,
    KSDetector,
    NumericProfile,
    PSIDetector,
    WassersteinDetector,
    make_detector,
)
from modelloop.monitoring._detectors import ks_p_value

RNG = np.random.default_rng(7)

# (reference, current) pairs: continuous, shifted, heavy-tailed, discrete, tiny, disjoint ranges
PAIRS = {
    "same": (RNG.normal(0, 1, 40_000), RNG.normal(0, 1, 25_000)),
    "shift": (RNG.normal(0, 1, 40_000), RNG.normal(0.05, 1.1, 30_000)),
    "lognormal": (RNG.lognormal(0, 1.5, 30_000), RNG.lognormal(0.1, 1.5, 30_000)),
    "integers": (RNG.poisson(4, 30_000), RNG.poisson(4.3, 20_000)),
    "tiny": (RNG.normal(0, 1, 300), RNG.normal(0.3, 1, 200)),
    "outside": (RNG.uniform(0, 1, 5_000), RNG.uniform(0.5, 2.0, 5_000)),
}


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_ks_statistic_within_stated_bound_of_scipy(case: str) -> None:
    ref, cur = PAIRS[case]
    r = KSDetector().fit(ref).test(cur)
    exact = stats.ks_2samp(ref, cur, method="asymp")
    assert r.statistic is not None and r.error_bound is not None
    assert r.statistic <= exact.statistic + 1e-12  # edges only ever under-estimate D
    assert exact.statistic - r.statistic <= r.error_bound + 1e-12
    # the a-priori bound: the largest open-cell mass on either side
    prof = NumericProfile.from_values(ref)
    assert r.error_bound <= max(prof.counts[1::2].max() / len(ref), 1 / len(cur)) * 3 + 1e-12
    en = len(ref) * len(cur) / (len(ref) + len(cur))
    assert r.p_value == pytest.approx(ks_p_value(r.statistic, en), rel=1e-12, abs=1e-300)
    # binning errs towards not flagging: p is at least the raw-data p-value at that size
    assert r.p_value >= ks_p_value(exact.statistic, en) * (1 - 1e-9)
    if en <= 10_000:  # scipy's finite-n distribution, as ks_2samp
        assert ks_p_value(exact.statistic, en) == pytest.approx(exact.pvalue, rel=1e-9)
    else:  # the limiting distribution: close to scipy's, closest where decisions are made
        rel = 0.01 if exact.pvalue > 1e-3 else 0.1
        assert ks_p_value(exact.statistic, en) == pytest.approx(exact.pvalue, rel=rel)


def test_ks_is_exact_for_discrete_data() -> None:
    ref, cur = PAIRS["integers"][0][:10_000], PAIRS["integers"][1][:10_000]
    r = KSDetector().fit(ref).test(cur)
    exact = stats.ks_2samp(ref, cur, method="asymp")
    assert r.error_bound == 0.0
    assert r.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(exact.pvalue, rel=1e-9)


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_wasserstein_within_stated_bound_of_scipy(case: str) -> None:
    ref, cur = PAIRS[case]
    r = WassersteinDetector().fit(ref).test(cur)
    exact = stats.wasserstein_distance(ref, cur) / np.std(ref, ddof=1)
    assert abs(r.statistic - exact) <= r.error_bound + 1e-12
    assert r.error_bound < 0.05


def test_psi_equals_direct_computation_on_raw_data() -> None:
    ref, cur = PAIRS["shift"]
    det = PSIDetector(bins=10).fit(ref)
    # the same coarse bins, counted on raw data
    s_ref, s_cur = np.sort(ref), np.sort(cur)
    prof = det.reference_
    cut = np.unique(np.searchsorted(prof.cum_le, np.arange(1, 10) * len(ref) / 10, "left"))
    bounds = prof.edges[cut]
    p = np.diff(np.concatenate([[0], np.searchsorted(s_ref, bounds, "right"), [len(ref)]]))
    q = np.diff(np.concatenate([[0], np.searchsorted(s_cur, bounds, "right"), [len(cur)]]))
    p, q = p / len(ref), q / len(cur)
    assert p.max() - p.min() < 0.002  # deciles of the reference
    expected = float(((q - p) * np.log(q / p)).sum())
    assert det.score(cur) == pytest.approx(expected, rel=1e-12)
    big = PSIDetector().fit(ref).test(ref + 0.5)
    assert big.drifted and 0.15 < big.statistic < 0.35


def _cat(rng: np.random.Generator, p: list[float], n: int, levels: str = "abcd") -> pd.Series:
    return pd.Series(rng.choice(list(levels), size=n, p=p))


def test_chi2_equals_scipy_contingency_on_raw_counts() -> None:
    rng = np.random.default_rng(3)
    ref = _cat(rng, [0.4, 0.3, 0.2, 0.1], 20_000)
    cur = pd.concat([_cat(rng, [0.35, 0.3, 0.25, 0.1], 8_000), pd.Series(["e"] * 30)])
    r = ChiSquareDetector().fit(ref).test(cur)
    labels = sorted(set(ref) | set(cur))
    table = [[int((ref == k).sum()) for k in labels], [int((cur == k).sum()) for k in labels]]
    exact = stats.chi2_contingency(table)
    assert r.statistic == pytest.approx(exact.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300)
    assert r.drifted and r.n_current == 8_030


def test_chi2_two_categories_uses_scipy_default_yates_correction() -> None:
    rng = np.random.default_rng(4)
    ref, cur = _cat(rng, [0.5, 0.5], 500, "ab"), _cat(rng, [0.45, 0.55], 400, "ab")
    table = [[(ref == k).sum() for k in "ab"], [(cur == k).sum() for k in "ab"]]
    r = ChiSquareDetector().fit(ref).test(cur)
    assert r.statistic == pytest.approx(stats.chi2_contingency(table).statistic, rel=1e-12)


def test_jensen_shannon_equals_scipy() -> None:
    rng = np.random.default_rng(5)
    ref = _cat(rng, [0.4, 0.3, 0.2, 0.1], 10_000)
    cur = _cat(rng, [0.1, 0.2, 0.3, 0.4], 10_000)
    r = JensenShannonDetector().fit(ref).test(cur)
    p = ref.value_counts(normalize=True).sort_index()
    q = cur.value_counts(normalize=True).sort_index()
    assert r.statistic == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    assert r.drifted and r.p_value is None and r.threshold == 0.1


def test_estimator_contract() -> None:
    ref, cur = PAIRS["shift"]
    for det in (KSDetector(alpha=0.01), WassersteinDetector(threshold=0.2), PSIDetector(bins=5)):
        assert det.fit(ref) is det
        learned = [k for k in vars(det) if k not in det.get_params()]
        assert learned and all(k.endswith("_") for k in learned)
        twin = clone(det)  # scikit-learn's clone: same settings, no learned state
        assert twin.get_params() == det.get_params() and not hasattr(twin, "reference_")
        with pytest.raises(InvalidInput, match="not fitted"):
            twin.test(cur)
        # fitting on the profile is the same as fitting on raw values
        prof = NumericProfile.from_values(ref)
        assert type(det)(**det.get_params()).fit(prof).test(cur) == det.test(cur)
    assert KSDetector().set_params(alpha=0.2).alpha == 0.2
    with pytest.raises(InvalidInput, match="no parameter"):
        KSDetector().set_params(threshold=1)
    with pytest.raises(InvalidInput, match="categorical"):
        ChiSquareDetector().fit(NumericProfile.from_values(ref))
    with pytest.raises(InvalidInput, match="unknown drift method"):
        make_detector("anderson")


def test_no_data_on_one_side_is_not_drift() -> None:
    r = KSDetector().fit([1.0, 2.0, 3.0]).test([np.nan, np.nan])
    assert r.statistic is None and not r.drifted and r.n_current == 0
    assert r.to_dict()["statistic"] is None


def test_constant_reference_column() -> None:
    ref = np.full(1000, 3.0)
    w = WassersteinDetector().fit(ref)
    assert w.test(np.full(500, 3.0)).statistic == 0.0
    moved = w.test(np.full(500, 3.5))  # std is 0, so the raw distance is the score
    assert moved.statistic == pytest.approx(0.5) and moved.drifted
    ks = KSDetector().fit(ref).test(np.r_[np.full(250, 3.0), np.full(250, 4.0)])
    assert ks.statistic == pytest.approx(0.5) and ks.error_bound == 0.0 and ks.drifted


@pytest.mark.parametrize("shift", [0.0, 0.15, 0.3])
def test_ks_p_value_close_to_scipys_default_method(shift: float) -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0, 1, 800), rng.normal(shift, 1, 600)
    r = KSDetector().fit(ref).test(cur)
    scipy_default = stats.ks_2samp(ref, cur)  # exact or asymptotic, as scipy chooses
    assert r.p_value == pytest.approx(scipy_default.pvalue, rel=0.1, abs=1e-6)
