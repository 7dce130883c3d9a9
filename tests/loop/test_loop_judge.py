"""The judge of a rollout step: fails a worse challenger, passes an equal one with enough
labels, and says inconclusive otherwise; guards fail a slow or failing challenger."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from modelloop.loop import GuardStats, judge_errors, judge_losses, judge_step


def test_a_much_worse_challenger_fails_with_its_evidence() -> None:
    v = judge_errors(100, 200, 40, 200, alpha=0.05, margin=0.01, min_outcomes=100)
    assert v.outcome == "fail"
    assert v.challenger == 0.5 and v.champion == 0.2
    assert v.n_challenger == 200 and v.n_champion == 200
    assert v.interval is not None and v.interval[0] > 0
    assert v.p_value is not None and v.p_value < 0.001
    low, high = confint_proportions_2indep(100, 200, 40, 200, method="newcomb", alpha=0.1)
    assert v.interval == pytest.approx((low, high))
    assert v.to_dict()["outcome"] == "fail"


def test_an_equal_challenger_passes_once_labels_suffice() -> None:
    few = judge_errors(20, 100, 20, 100, margin=0.05, min_outcomes=500)
    assert few.outcome == "inconclusive" and "100 of 500" in few.reason
    many = judge_errors(1000, 5000, 1000, 5000, margin=0.03, min_outcomes=500)
    assert many.outcome == "pass"
    assert many.interval is not None and many.interval[1] <= 0.03


def test_no_labels_on_one_side_is_inconclusive() -> None:
    v = judge_errors(0, 0, 10, 50)
    assert v.outcome == "inconclusive" and v.p_value is None and "one side" in v.reason
    assert "either side" in judge_errors(0, 0, 0, 0).reason
    empty = judge_losses([], [])
    assert empty.outcome == "inconclusive" and "either side" in empty.reason
    assert empty.interval is None and empty.metric == "mean_loss"


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="impossible"):
        judge_errors(11, 10, 0, 10)


def test_false_failures_of_an_equal_challenger_stay_within_alpha() -> None:
    rng = np.random.default_rng(7)
    alpha, trials, n, rate = 0.05, 400, 300, 0.2
    fails = sum(
        judge_errors(
            int(rng.binomial(n, rate)), n, int(rng.binomial(n, rate)), n, alpha=alpha
        ).outcome
        == "fail"
        for _ in range(trials)
    )
    # the one-sided bound errs at most alpha of the time; allow the binomial noise of 400 trials
    assert fails / trials <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / trials)


def test_regression_losses_by_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    champion = np.abs(rng.normal(0, 1.0, 400))
    worse = np.abs(rng.normal(0, 2.0, 400))
    same = np.abs(rng.normal(0, 1.0, 400))
    assert judge_losses(worse, champion, min_outcomes=100).outcome == "fail"
    v = judge_losses(same, champion, margin=0.2, min_outcomes=100)
    assert v.outcome == "pass" and v.p_value is not None and v.p_value >= 0.05
    assert judge_losses(same[:50], champion[:50], min_outcomes=100).outcome == "inconclusive"
    with pytest.raises(ValueError, match="finite"):
        judge_losses([1.0, float("nan")], [1.0, 2.0])


def test_guards_fail_a_slow_or_failing_challenger_and_keep_unknowns_inconclusive() -> None:
    passing = judge_errors(1000, 5000, 1000, 5000, margin=0.03, min_outcomes=500)
    fast = GuardStats(p99_ms=20.0, error_rate=0.0, requests=1000)
    slow = GuardStats(p99_ms=80.0, error_rate=0.0, requests=1000)
    failing = GuardStats(p99_ms=20.0, error_rate=0.05, requests=1000)
    assert judge_step(passing, fast, fast).outcome == "pass"
    v = judge_step(passing, slow, fast)
    assert v.outcome == "fail" and "p99 latency 80.0 ms" in v.reason
    assert v.guards["p99_latency_ms"] == {"challenger": 80.0, "champion": 20.0, "max_ratio": 1.5}
    assert judge_step(passing, failing, fast).outcome == "fail"
    unknown = judge_step(passing, None, None)
    assert unknown.outcome == "inconclusive" and "no server figures" in unknown.reason
    assert (
        judge_step(passing, None, None, max_p99_latency_ratio=None, max_error_rate=None).outcome
        == "pass"
    )
