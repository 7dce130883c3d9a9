"""The judge of one rollout step: the challenger against the champion on the same period's
labelled outcomes, with guards on latency and server errors.

Three outcomes, each with its evidence:

* **fail** — the challenger is worse with confidence: for classification, the one-sided
  ``1 - alpha`` lower bound of (challenger error rate - champion error rate) is above 0
  (Newcombe's hybrid score interval); for regression, Mann-Whitney's one-sided test finds the
  challenger's per-row losses larger at ``alpha``. A guard breach fails the step too.
* **pass** — enough labelled outcomes on both sides, and the challenger is not worse by more
  than ``margin``: the upper bound of the error-rate difference is at most ``margin``
  (classification), or the test does not find it worse and its mean loss is within
  ``1 + margin`` of the champion's (regression); and the guards hold.
* **inconclusive** — neither yet: too few labels, an interval that still straddles the margin, or
  no server figures for the guards. The controller keeps the step running until its time limit,
  then applies the policy's ``inconclusive`` action.

The intervals and tests come from statsmodels and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Losses = Sequence[float] | NDArray[np.float64]

__all__ = ["GuardStats", "Verdict", "judge_errors", "judge_losses", "judge_step"]

Outcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class GuardStats:
    """One side's server figures over the step: p99 latency and the share of failed requests."""

    p99_ms: float | None
    error_rate: float | None
    requests: int = 0


@dataclass(frozen=True)
class Verdict:
    """What the judge decided and why, with every number it used."""

    outcome: Outcome
    test: str
    metric: str
    n_challenger: int
    n_champion: int
    challenger: float | None
    champion: float | None
    statistic: float | None
    p_value: float | None
    interval: tuple[float, float] | None
    alpha: float
    margin: float
    reason: str
    guards: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _no_labels(verdict: Callable[..., Verdict], n_challenger: int, n_champion: int) -> Verdict:
    """The inconclusive verdict of a step with no labelled outcomes on a side yet."""
    either = not n_challenger and not n_champion
    return verdict(
        "inconclusive",
        statistic=None,
        p_value=None,
        interval=None,
        reason=f"no labelled outcomes yet on {'either side' if either else 'one side'}",
    )


def judge_errors(
    errors_challenger: int,
    n_challenger: int,
    errors_champion: int,
    n_champion: int,
    *,
    alpha: float = 0.05,
    margin: float = 0.01,
    min_outcomes: int = 200,
) -> Verdict:
    """Judge classification outcomes given as counts of wrong answers out of labelled rows."""
    for name, k, n in (
        ("challenger", errors_challenger, n_challenger),
        ("champion", errors_champion, n_champion),
    ):
        if n < 0 or not 0 <= k <= max(n, 0):
            raise ValueError(f"{name}: {k} errors out of {n} labelled rows is impossible")
    rate_ch = errors_challenger / n_challenger if n_challenger else None
    rate_cp = errors_champion / n_champion if n_champion else None
    verdict = partial(
        Verdict,
        test="error-rate difference (Newcombe interval, one-sided)",
        metric="error_rate",
        n_challenger=n_challenger,
        n_champion=n_champion,
        challenger=rate_ch,
        champion=rate_cp,
        alpha=alpha,
        margin=margin,
    )
    if not n_challenger or not n_champion:
        return _no_labels(verdict, n_challenger, n_champion)
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    low, high = confint_proportions_2indep(
        errors_challenger,
        n_challenger,
        errors_champion,
        n_champion,
        method="newcomb",
        compare="diff",
        alpha=2 * alpha,  # a two-sided 1 - 2a interval: each bound is one-sided at 1 - a
    )
    test = test_proportions_2indep(
        errors_challenger,
        n_challenger,
        errors_champion,
        n_champion,
        method="agresti-caffo",
        compare="diff",
        alternative="larger",
    )
    interval = (float(low), float(high))
    stat, p = _finite(test.statistic), _finite(test.pvalue)
    enough = min(n_challenger, n_champion) >= min_outcomes
    if low > 0:
        outcome: Outcome = "fail"
        reason = (
            f"challenger's error rate {rate_ch:.4f} is higher than the champion's {rate_cp:.4f} "
            f"(lower bound of the difference {low:.4f} > 0)"
        )
    elif enough and high <= margin:
        outcome = "pass"
        reason = (
            f"challenger is not worse by more than {margin:g} "
            f"(upper bound of the difference {high:.4f})"
        )
    else:
        outcome = "inconclusive"
        reason = (
            f"{min(n_challenger, n_champion)} of {min_outcomes} labelled outcomes needed"
            if not enough
            else f"difference still unsure: upper bound {high:.4f} above the margin {margin:g}"
        )
    return verdict(outcome, statistic=stat, p_value=p, interval=interval, reason=reason)


def judge_losses(
    losses_challenger: Losses,
    losses_champion: Losses,
    *,
    alpha: float = 0.05,
    margin: float = 0.01,
    min_outcomes: int = 200,
) -> Verdict:
    """Judge per-row losses (absolute or squared errors): lower is better."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    ch = np.asarray(losses_challenger, dtype=float)
    cp = np.asarray(losses_champion, dtype=float)
    if not (np.isfinite(ch).all() and np.isfinite(cp).all()):
        raise ValueError("losses must be finite numbers")
    mean_ch = float(ch.mean()) if ch.size else None
    mean_cp = float(cp.mean()) if cp.size else None
    verdict = partial(
        Verdict,
        test="Mann-Whitney U on per-row losses (one-sided)",
        metric="mean_loss",
        n_challenger=int(ch.size),
        n_champion=int(cp.size),
        challenger=mean_ch,
        champion=mean_cp,
        alpha=alpha,
        margin=margin,
    )
    if not ch.size or not cp.size:
        return _no_labels(verdict, int(ch.size), int(cp.size))
    res = mannwhitneyu(ch, cp, alternative="greater")
    stat, p = _finite(res.statistic), _finite(res.pvalue)
    enough = min(ch.size, cp.size) >= min_outcomes
    assert mean_ch is not None and mean_cp is not None
    if p is not None and p < alpha:
        outcome: Outcome = "fail"
        reason = f"challenger's losses are larger (p = {p:.4g} < {alpha:g})"
    elif enough and mean_ch <= mean_cp * (1 + margin):
        outcome = "pass"
        reason = f"challenger's mean loss {mean_ch:.4g} within {margin:g} of {mean_cp:.4g}"
    else:
        outcome = "inconclusive"
        reason = (
            f"{min(ch.size, cp.size)} of {min_outcomes} labelled outcomes needed"
            if not enough
            else f"mean loss {mean_ch:.4g} above {mean_cp:.4g} by more than {margin:g}"
        )
    return verdict(outcome, statistic=stat, p_value=p, interval=None, reason=reason)


def judge_step(
    verdict: Verdict,
    challenger: GuardStats | None,
    champion: GuardStats | None,
    *,
    max_p99_latency_ratio: float | None = 1.5,
    max_error_rate: float | None = 0.01,
) -> Verdict:
    """``verdict`` with the latency and error guards applied: a breach fails the step; guards
    that cannot be checked (no server figures) keep a passing step inconclusive."""
    guards: dict[str, Any] = {}
    breaches: list[str] = []
    unknown: list[str] = []
    if max_error_rate is not None:
        rate = challenger.error_rate if challenger else None
        guards["error_rate"] = {"challenger": rate, "max": max_error_rate}
        if rate is None:
            unknown.append("error rate")
        elif rate > max_error_rate:
            breaches.append(f"server error rate {rate:.4f} > {max_error_rate:g}")
    if max_p99_latency_ratio is not None:
        ch = challenger.p99_ms if challenger else None
        cp = champion.p99_ms if champion else None
        guards["p99_latency_ms"] = {
            "challenger": ch,
            "champion": cp,
            "max_ratio": max_p99_latency_ratio,
        }
        if ch is None or cp is None or cp <= 0:
            unknown.append("p99 latency")
        elif ch > cp * max_p99_latency_ratio:
            breaches.append(
                f"p99 latency {ch:.1f} ms > {max_p99_latency_ratio:g} x champion's {cp:.1f} ms"
            )
    outcome, reason = verdict.outcome, verdict.reason
    if breaches:
        outcome, reason = "fail", "; ".join(breaches)
    elif unknown and outcome == "pass":
        outcome = "inconclusive"
        reason = f"{reason}; but no server figures for {' and '.join(unknown)}"
    return Verdict(**{**asdict(verdict), "outcome": outcome, "reason": reason, "guards": guards})
