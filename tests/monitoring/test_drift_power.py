"""The default drift rule is one rule for every window size: its power grows smoothly with n, and
its false-alarm rate under no drift stays at or below alpha at every n."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelloop.monitoring import (
    CategoricalProfile,
    DriftMonitor,
    KSDetector,
    KSEffectDetector,
    NumericProfile,
    TVEffectDetector,
    WassersteinDetector,
)
from modelloop.monitoring._summary import CategoricalSummary, NumericSummary

ALPHA = 0.05
N_REF = 100_000
# pairs (n, 1.05 n) across the old method switch at 2,000 rows, from 500 to 100k rows
GRID = (500, 1_000, 1_900, 2_000, 5_000, 20_000, 100_000)
#: The most the detection rate may change between n and 1.05 n. Samples are coupled (the 1.05 n
#: window is the n window plus 5% more rows), so the difference counts the repetitions whose
#: verdict changes; for a continuous rule that is the true change of power (< 0.05 on this grid)
#: plus a few flips near the boundary. The old rule changed by 0.56 between 2,000 and 2,001 rows.
MAX_STEP = 0.12
REPEATS = 150


@pytest.fixture(scope="module")
def reference() -> NumericProfile:
    return NumericProfile.from_values(np.random.default_rng(1).normal(size=N_REF), "x")


def _rates(detector, profile, shift: float, seed: int) -> dict[int, float]:
    """Detection rate at every n of the grid and at 1.05 n, from coupled samples."""
    det = detector.fit(profile)
    sizes = sorted({s for n in GRID for s in (n, math.ceil(n * 1.05))})
    hits = dict.fromkeys(sizes, 0)
    rng = np.random.default_rng(seed)
    for _ in range(REPEATS):
        pool = rng.normal(shift, 1.0, sizes[-1])
        for n in sizes:
            r = det.test(NumericSummary.from_values(pool[:n], profile))
            hits[n] += r.drifted
    return {n: h / REPEATS for n, h in hits.items()}


@pytest.mark.parametrize("shift", [0.08, 0.1])
def test_detection_rate_has_no_jump_between_500_and_100k_rows(reference, shift) -> None:
    rates = _rates(KSEffectDetector(alpha=ALPHA), reference, shift, seed=int(shift * 100))
    for n in GRID:
        step = abs(rates[math.ceil(n * 1.05)] - rates[n])
        assert step <= MAX_STEP, (n, rates)
    # power grows with n and reaches certainty well before 100k rows for shifts above 0.05 sd
    assert rates[500] < 0.2 and rates[100_000] == 1.0
    assert rates[20_000] >= rates[2_000] >= rates[500]


def _old_rule(ref: NumericProfile, cur: np.ndarray) -> bool:
    """The rule before issue 16: KS up to 2,000 rows, Wasserstein >= 0.1 sd above."""
    det = KSDetector(alpha=ALPHA) if len(cur) <= 2_000 else WassersteinDetector(threshold=0.1)
    return det.fit(ref).test(NumericSummary.from_values(cur, ref)).drifted


def test_the_harness_sees_the_old_cliff(reference) -> None:
    """The same coupled comparison finds the old switch's jump: the test can fail."""
    rng = np.random.default_rng(5)
    at, above = 0, 0
    for _ in range(60):
        pool = rng.normal(0.1, 1.0, 2_100)
        at += _old_rule(reference, pool[:2_000])
        above += _old_rule(reference, pool)
    assert (at - above) / 60 > MAX_STEP


@pytest.mark.parametrize("n", [500, 2_000, 20_000, 200_000])
def test_null_false_alarm_rate_at_most_alpha_numeric(reference, n) -> None:
    """No drift: the current window comes from the reference's distribution. The DKW interval
    is conservative, so the true rate is far below alpha; at most 5% of the windows may flag.
    With 400 windows (200 at 200k rows) a true rate of 2 alpha would fail this with probability
    above 0.999 (0.99 at 200 windows)."""
    det = KSEffectDetector(alpha=ALPHA).fit(reference)
    rng = np.random.default_rng(n)
    reps = 400 if n <= 20_000 else 200
    flagged = sum(
        det.test(NumericSummary.from_values(rng.normal(size=n), reference)).drifted
        for _ in range(reps)
    )
    assert flagged / reps <= ALPHA


@pytest.mark.parametrize("k", [4, 40])
@pytest.mark.parametrize("n", [500, 5_000, 100_000])
def test_null_false_alarm_rate_at_most_alpha_categorical(k, n) -> None:
    """Categorical columns with few and many levels (unequal shares), under no drift."""
    rng = np.random.default_rng(k * n)
    p = rng.dirichlet(np.ones(k))
    levels = np.array([f"c{i}" for i in range(k)])
    ref = CategoricalProfile.from_values(levels[rng.choice(k, N_REF, p=p)], "c")
    det = TVEffectDetector(alpha=ALPHA).fit(ref)
    reps = 200
    flagged = 0
    for _ in range(reps):
        counts = rng.multinomial(n, p)
        cur = CategoricalSummary("c", n, 0, {f"c{i}": int(c) for i, c in enumerate(counts) if c})
        flagged += det.test(cur).drifted
    assert flagged / reps <= ALPHA


def test_categorical_rule_is_continuous_and_finds_real_shifts() -> None:
    rng = np.random.default_rng(3)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    q = np.array([0.34, 0.3, 0.23, 0.13])  # TV 0.06: three times the negligible effect
    ref = CategoricalProfile.from_values(np.array(list("abcd"))[rng.choice(4, N_REF, p=p)], "c")
    det = TVEffectDetector(alpha=ALPHA).fit(ref)

    def rate(n: int) -> float:
        hits = 0
        for _ in range(150):
            counts = rng.multinomial(n, q)
            hits += det.test(
                CategoricalSummary("c", n, 0, dict(zip("abcd", counts.tolist(), strict=True)))
            ).drifted
        return hits / 150

    rates = {n: rate(n) for n in (1_900, 2_000, 2_100, 20_000)}
    assert abs(rates[2_100] - rates[1_900]) <= MAX_STEP + 0.05  # independent samples here
    assert rates[20_000] == 1.0


def test_effect_detector_numbers_match_the_stated_formulas(reference) -> None:
    rng = np.random.default_rng(2)
    cur = rng.normal(0.3, 1.0, 3_000)
    r = KSEffectDetector(alpha=ALPHA, min_effect=0.02).fit(reference).test(cur)
    plain = KSDetector().fit(reference).test(cur)
    assert r.statistic == plain.statistic  # the same binned KS distance
    s = 1 / math.sqrt(N_REF) + 1 / math.sqrt(3_000)
    assert r.p_value == pytest.approx(4 * math.exp(-2 * ((r.statistic - 0.02) / s) ** 2))
    half = s * math.sqrt(math.log(4 / ALPHA) / 2)
    assert r.ci_low == pytest.approx(r.statistic - half)
    assert r.ci_low > 0.02 and r.drifted and r.verdict == "drifted"
    # the interval covers the distance on raw data (scipy) with room to spare
    raw = stats.ks_2samp(rng.normal(size=N_REF), cur).statistic
    assert r.ci_low <= raw <= r.ci_high
    # a window identical in law: no drift, p-value 1 when the distance is below min_effect
    same = KSEffectDetector().fit(reference).test(rng.normal(size=50_000))
    assert not same.drifted and same.p_value == 1.0 and same.verdict == "no drift"


def test_dataset_run_states_rule_and_threshold_for_every_column(workload_frames) -> None:
    ref, cur = workload_frames
    result = DriftMonitor(min_effect=0.05).fit(ref).test(cur)
    for col in result.to_dict()["columns"]:
        assert col["min_effect"] == 0.05 and col["threshold"] == ALPHA
        assert "negligible effect 0.05" in col["rule"]
        assert col["verdict"] in ("drifted", "no drift")
