"""Anomaly detection on operational series: a seasonal, robust expectation and the residuals
that leave its band.

Why statsmodels (STL/MSTL) and not statsforecast or pyod: the detector needs a
*decomposition* (level + daily profile) that tolerates the very outliers it is looking for.
statsmodels' STL has a robust mode (bisquare weights in an outer loop) and MSTL stacks it over
several periods; it is already a dependency of the loop controller. statsforecast is built for
forecasting many series fast (numba-compiled models, seconds of compilation at first use); its
MSTL is a forecasting model, and nothing in a batch scan needs its speed or its forecasts (it is
the candidate for the demand forecasts of ``ops forecast``). pyod's detectors (isolation forest,
LOF, ...) score points of a feature space: they know nothing of time or season, so a daily peak
looks as unusual as a fault, and they give no expected band to show an SRE; the benchmark keeps
an isolation forest as the library baseline to show that.

The method, per series:

1. *Transform* so noise is about the same size everywhere: ``counts`` (errors) by Anscombe's
   ``2·sqrt(y + 3/8)`` (Poisson noise becomes unit variance), ``log`` for latencies and
   ``log1p`` for request counts (their changes are multiplicative), none otherwise.
2. *Expect*: the daily profile from robust STL on bucket medians (about 48 per day, so a spike
   inside a bucket does not move it and a month of 10-second rows stays cheap), with a seasonal
   window spanning every cycle (the profile is the same each day, so one day's anomaly cannot
   bend it), plus a level: the centred rolling median of a day of the deseasonalised bucket
   medians, both interpolated back. Other seasons (e.g. weekly, through MSTL) only when asked
   for. A series shorter than two days has no usable season: its expectation is its median
   (past a day, the rolling median of a day).
3. *Score*: residual / (1.4826·MAD of the residuals at that time of day), with a floor (1 for
   counts: Poisson noise; 5 % for logs) so a flat series does not turn every blip into an
   anomaly.
4. *Flag*: points past ``threshold`` (spikes), a centred rolling median of scores past
   ``level_threshold`` (sustained shifts too small for a single point), and a rolling robust
   spread (around a rolling high median) past ``variance_ratio`` times the usual one (variance
   changes). The rolling medians are exact (scipy's rank filters) and computed only where
   they can cross their threshold: a month of 10-second rows scans in well under a second per
   series. Flags closer than two
   points merge into one anomaly; it is an ``error_burst`` on an error series, a
   ``variance_change`` when the spread moved and the level did not, a ``spike`` when it lasts at
   most ``spike_points``, else a ``level_shift``.

Every anomaly carries its series, kind, span, the expected value and band (back in the series'
units) and the observed value at its worst point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["DAY_S", "MIN_POINTS", "WEEK_S", "Anomaly", "detect_anomalies"]

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
#: The fewest points a series may have: fewer give no robust estimate of its spread.
MIN_POINTS = 24
#: About this many points per cycle of the shortest season go into the decomposition.
_CYCLE_POINTS = 48

#: DatetimeIndex.asi8 counts these per second, by the index's unit
_TICKS_PER_S = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}

Transform = Literal["none", "log", "log1p", "counts"]
Direction = Literal["both", "up", "down"]


@dataclass(frozen=True)
class Anomaly:
    """One anomaly of one series: what, when, and how far from what was expected."""

    series: str
    kind: str  # spike, level_shift, variance_change, error_burst
    start: pd.Timestamp
    end: pd.Timestamp  # the last anomalous point (inclusive)
    points: int
    expected: float  # the expectation at the worst point
    low: float  # the band at the worst point
    high: float
    observed: float  # the value at the worst point
    score: float  # robust z-score at the worst point (signed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat()
        return d

    def describe(self) -> str:
        """One sentence for humans."""
        return (
            f"{self.series}: {self.kind.replace('_', ' ')} from {self.start:%Y-%m-%d %H:%M:%S} "
            f"to {self.end:%Y-%m-%d %H:%M:%S} ({self.points} points): observed "
            f"{self.observed:.4g}, expected {self.expected:.4g} (band {self.low:.4g} to "
            f"{self.high:.4g})"
        )


def _check(series: pd.Series, name: str) -> tuple[pd.Series, float]:
    """The series with a UTC index, and its step in seconds; InvalidInput on what cannot be
    analysed (not a time index, too short, NaN, duplicated or unsorted stamps, gaps)."""
    import numpy as np
    import pandas as pd

    if not isinstance(series, pd.Series):
        raise InvalidInput(f"series {name!r} must be a pandas Series, got {type(series).__name__}")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise InvalidInput(f"series {name!r} needs a DatetimeIndex (timestamps), not a plain index")
    if len(series) < MIN_POINTS:
        raise InvalidInput(
            f"series {name!r} has {len(series)} points; anomaly detection needs at least "
            f"{MIN_POINTS}"
        )
    index = series.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    try:
        values = series.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"series {name!r} holds values that are not numbers") from None
    bad = ~np.isfinite(values)
    if bad.any():
        raise InvalidInput(
            f"series {name!r} has {int(bad.sum())} missing or infinite values, the first at "
            f"{index[int(np.argmax(bad))]}; fill or drop them first"
        )
    diffs = np.diff(index.asi8) / _TICKS_PER_S[index.unit]
    if not (diffs > 0).all():
        raise InvalidInput(f"series {name!r}: timestamps must be strictly increasing")
    step = float(np.median(diffs))
    gaps = np.flatnonzero(diffs > 1.5 * step)
    if len(gaps):
        at = int(gaps[0])
        raise InvalidInput(
            f"series {name!r} has {len(gaps)} gap(s) in its {step:g} s steps, the first of "
            f"{diffs[at]:g} s after {index[at]}; analyse the stretches apart or fill the gap"
        )
    return pd.Series(values, index=index, name=name), step


def _transform(y: np.ndarray, how: Transform, name: str) -> np.ndarray:
    import numpy as np

    if how == "counts":
        if (y < 0).any():
            raise InvalidInput(f"series {name!r} is counted but holds negative values")
        return 2.0 * np.sqrt(y + 0.375)
    if how == "log":
        if (y <= 0).any():
            raise InvalidInput(f"series {name!r} needs positive values for the log transform")
        return np.log(y)
    if how == "log1p":
        if (y < 0).any():
            raise InvalidInput(f"series {name!r} needs values >= 0 for the log1p transform")
        return np.log1p(y)
    return y


def _inverse(z: np.ndarray, how: Transform) -> np.ndarray:
    import numpy as np

    if how == "counts":
        return np.maximum(np.square(np.maximum(z, 0.0) / 2.0) - 0.375, 0.0)
    if how == "log":
        return np.exp(z)
    if how == "log1p":
        return np.expm1(z)
    return z


def _rolling_median(x: np.ndarray, window: int, min_periods: int = 1) -> np.ndarray:
    """``pandas.Series(x).rolling(window, center=True, min_periods=min_periods).median()``,
    exactly (an even window averages its two middle values; windows at the ends shrink), but
    with scipy's rank filters over the inside: several times faster on long series."""
    import numpy as np
    from scipy import ndimage

    n = len(x)
    window = max(1, int(window))
    before = window // 2  # pandas centres a window of w on [i - w//2, i + w - 1 - w//2]
    after = window - 1 - before
    out = np.empty(n, dtype=float)
    if window == 1 or window > n:
        out[:] = x  # every point is an end point below when the window is longer than x
    elif window % 2:
        out[:] = ndimage.median_filter(x, size=window, mode="nearest")
    else:
        low = ndimage.rank_filter(x, window // 2 - 1, size=window, mode="nearest")
        high = ndimage.rank_filter(x, window // 2, size=window, mode="nearest")
        out[:] = (low + high) / 2.0
    # the ends, where pandas' window shrinks instead of repeating the edge value
    for i in [*range(min(before, n)), *range(max(before, n - after), n)]:
        part = x[max(0, i - before) : i + after + 1]
        out[i] = float(np.median(part)) if len(part) >= min_periods else np.nan
    return out


def _rolling_high_median(x: np.ndarray, window: int) -> np.ndarray:
    """The centred rolling *high* median (of an even window, the upper of its two middle
    values; windows at the ends shrink): one rank filter instead of two."""
    import numpy as np
    from scipy import ndimage

    n = len(x)
    window = max(1, int(window))
    if window > n or window % 2:
        return _rolling_median(x, window)
    before, after = window // 2, window - 1 - window // 2
    out = np.asarray(ndimage.rank_filter(x, window // 2, size=window, mode="nearest"), float)
    for i in [*range(before), *range(n - after, n)]:
        part = np.sort(x[max(0, i - before) : i + after + 1])
        out[i] = float(part[len(part) // 2])
    return out


def _rolling_median_at(
    x: np.ndarray, window: int, at: np.ndarray, min_periods: int = 1
) -> np.ndarray:
    """:func:`_rolling_median` at the points ``at`` (indices) only."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    window = max(1, int(window))
    before = window // 2
    out = np.full(len(at), np.nan)
    if not len(at):
        return out
    padded = np.concatenate([np.full(before, np.nan), x, np.full(window - 1 - before, np.nan)])
    rows = sliding_window_view(padded, window)[at]
    enough = (~np.isnan(rows)).sum(axis=1) >= min_periods
    if enough.any():
        out[enough] = np.nanmedian(rows[enough], axis=1)
    return out


def _median_reaches(flags: np.ndarray, window: int) -> np.ndarray:
    """Where a centred rolling median over ``window`` points can be past a threshold, given
    ``flags``: the points past it. A median past a threshold needs at least half its window
    past it, so elsewhere it is not (exactly: the rest need not be computed)."""
    import numpy as np

    n = len(flags)
    window = max(1, int(window))
    before, after = window // 2, window - 1 - window // 2
    marked = np.flatnonzero(flags)
    if len(marked) * window < n // 4:  # few flags (the usual case): count near them only
        reach = np.zeros(n, dtype=bool)
        around = np.zeros(n, dtype=bool)
        for offset in range(-after, before + 1):
            around[np.clip(marked + offset, 0, n - 1)] = True
        near = np.flatnonzero(around)
        lo, hi = np.maximum(near - before, 0), np.minimum(near + after, n - 1)
        counts = np.searchsorted(marked, hi, "right") - np.searchsorted(marked, lo, "left")
        reach[near] = 2 * counts >= hi - lo + 1
        return reach
    padded = np.zeros(n + window, dtype=np.int32)
    padded[before + 1 : before + 1 + n] = flags
    sums = np.cumsum(padded)
    counts = sums[window:] - sums[:-window]  # flags in [i - before, i + after], clipped
    reach = 2 * counts >= window
    # the ends, where the window is shorter
    for i in [*range(min(before, n)), *range(max(n - after, 0), n)]:
        size = min(i + after + 1, n) - max(i - before, 0)
        reach[i] = 2 * counts[i] >= size
    return reach


def _bucket_medians(y: np.ndarray, factor: int) -> np.ndarray:
    """Medians of consecutive buckets of ``factor`` points (the last may be shorter)."""
    import numpy as np

    n = len(y)
    full = n // factor * factor
    coarse = np.median(y[:full].reshape(-1, factor), axis=1)
    if full < n:
        coarse = np.append(coarse, np.median(y[full:]))
    return coarse


def _from_buckets(values: np.ndarray, factor: int, n: int) -> np.ndarray:
    """Bucket values back to ``n`` points, linear between bucket centres."""
    import numpy as np

    if factor == 1:
        return values
    centres = np.arange(len(values)) * factor + (factor - 1) / 2.0
    if n % factor:  # the last, shorter bucket has its own centre
        centres[-1] = (n // factor) * factor + (n % factor - 1) / 2.0
    return np.interp(np.arange(n), centres, values)


def _median_by(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The median of ``values`` in each group (small integers >= 0), given back at every point
    of the group."""
    import numpy as np

    order = np.argsort(groups.astype(np.int16), kind="stable")  # a radix sort
    ordered = values[order]  # a copy, partitioned in place below
    bounds = np.concatenate(([0], np.cumsum(np.bincount(groups))))
    medians = np.full(len(bounds) - 1, np.nan)
    for g, (a, b) in enumerate(pairwise(bounds.tolist())):
        if b > a:
            part = ordered[a:b]
            mid = (b - a) // 2
            if (b - a) % 2:
                part.partition(mid)
                medians[g] = part[mid]
            else:
                part.partition((mid - 1, mid))
                medians[g] = (part[mid - 1] + part[mid]) / 2.0
    return medians[groups]


def _expected(y: np.ndarray, step_s: float, seasons_s: Sequence[float]) -> np.ndarray:
    """Trend + seasonality from robust (M)STL; the median when no season fits twice."""
    import numpy as np

    n = len(y)
    periods = sorted({round(s / step_s) for s in seasons_s})
    day = max(3, round(DAY_S / step_s))
    # The decomposition and the level run on bucket medians, at most _CYCLE_POINTS per shortest
    # season (or per day): a median ignores a spike inside its bucket, the expectation of a
    # smooth, coarse series cannot chase the noise of each point (which would shrink the
    # residuals and their spread), and a month of 10-second rows stays cheap.
    factor = max(1, round((periods[0] if periods else day) / _CYCLE_POINTS))
    coarse = _bucket_medians(y, factor)
    day_buckets = max(3, round(day / factor))
    if not periods:
        if n <= day:
            return np.full(n, float(np.median(y)))
        level = _rolling_median(coarse, day_buckets)
        return _from_buckets(level, factor, n)
    cps = [max(2, round(p / factor)) for p in periods]
    from statsmodels.tsa.seasonal import MSTL, STL

    # Seasonal windows spanning every cycle: the profile is (nearly) the same each day and week,
    # so an anomaly on one day cannot bend the expectation of that day towards itself. The
    # smoothers are evaluated every tenth of their window and interpolated between (the
    # "jumps" of Cleveland et al.'s STL, as R's stl does by default): the same profile, several
    # times faster.
    windows = [max(7, 2 * (len(coarse) // c) + 1) for c in cps]
    if len(cps) == 1:
        stl = STL(
            coarse,
            period=cps[0],
            seasonal=windows[0],
            robust=True,
            seasonal_jump=-(-windows[0] // 10),
            trend_jump=-(-_trend_window(cps[0], windows[0]) // 10),
            low_pass_jump=-(-_low_pass_window(cps[0]) // 10),
        )
        # One inner pass per robustness pass, as R's stl does when robust; the robustness
        # weights settle within a few passes.
        seasonal_coarse = np.asarray(stl.fit(inner_iter=1, outer_iter=4).seasonal)
    else:
        fit = MSTL(coarse, periods=cps, windows=windows, stl_kwargs={"robust": True}).fit()
        seasonal_coarse = np.asarray(fit.seasonal).sum(axis=1)
    # The level: a centred rolling median of a day of the deseasonalised series (on the bucket
    # medians, interpolated back). An anomaly shorter than half a day cannot move it, so it
    # stands out whole; a change that lasts longer becomes the new normal after half a day.
    level = _rolling_median(coarse - seasonal_coarse, day_buckets)
    return _from_buckets(level + seasonal_coarse, factor, n)


def _trend_window(period: int, seasonal: int) -> int:
    """statsmodels' default trend window of STL (the smallest odd integer past
    ``1.5 * period / (1 - 1.5 / seasonal)``)."""
    import math

    trend = math.ceil(1.5 * period / (1 - 1.5 / seasonal))
    return trend + (trend % 2 == 0)


def _low_pass_window(period: int) -> int:
    """statsmodels' default low-pass window of STL (the smallest odd integer past the period)."""
    return period + 1 + (period % 2)


def _runs(flags: np.ndarray, bridge: int) -> list[tuple[int, int]]:
    """(first, last) of each run of True, runs closer than ``bridge`` points merged."""
    import numpy as np

    idx = np.flatnonzero(flags)
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > bridge)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def detect_anomalies(
    series: pd.Series,
    *,
    name: str | None = None,
    seasons: Sequence[float] | Literal["auto"] = "auto",
    transform: Transform = "none",
    direction: Direction = "both",
    burst: bool = False,
    threshold: float = 5.5,
    level_threshold: float = 3.0,
    level_points: int = 6,
    variance_ratio: float = 3.5,
    variance_points: int = 12,
    spike_points: int = 3,
) -> list[Anomaly]:
    """Anomalies of ``series`` (a regular, gap-free time series), oldest first.

    ``seasons``: periods in seconds to decompose, or ``"auto"`` (a day, when the series holds
    two of it). A season given explicitly that does not fit twice is an error.
    ``transform``: ``counts`` for counts, ``log`` for latencies. ``direction``: which side
    counts (``up`` for latencies and errors). ``burst``: call the anomalies error bursts.
    """
    import numpy as np

    label = name or str(series.name or "series")
    if direction not in ("both", "up", "down"):
        raise InvalidInput(f"direction must be both, up or down, got {direction!r}")
    if transform not in ("none", "log", "log1p", "counts"):
        raise InvalidInput(f"transform must be none, log, log1p or counts, got {transform!r}")
    checked, step = _check(series, label)
    n = len(checked)
    span_s = n * step
    if seasons == "auto":
        # The daily profile only: a weekly one (MSTL) learnt from a few weeks absorbs the
        # anomalies of those weeks, and costs seconds per series on a month of 10-second rows;
        # the rolling daily level carries the weekday/weekend difference instead. Pass
        # seasons=[DAY_S, WEEK_S] for MSTL over both.
        use = [DAY_S] if span_s >= 2 * DAY_S else []
    else:
        use = [float(s) for s in seasons]
        for s in use:
            if not s > 0 or s < 2 * step:
                raise InvalidInput(f"season of {s:g} s is not longer than two {step:g} s steps")
            if span_s < 2 * s:
                raise InvalidInput(
                    f"series {label!r} covers {span_s / 3600:.4g} h; a season of "
                    f"{s / 3600:.4g} h needs at least two of it ({2 * s / 3600:.4g} h)"
                )
    y = _transform(checked.to_numpy(), transform, label)
    expected = _expected(y, step, use)
    resid = y - expected
    centre = float(np.median(resid))
    floors = {"counts": 1.0, "log": 0.05, "log1p": 0.05}
    floor = floors[transform] if transform in floors else 1e-9 + 1e-3 * float(np.median(np.abs(y)))
    if not use:
        mad = float(np.median(np.abs(resid - centre)))
        sigma = np.full(n, max(1.4826 * mad, floor))
    else:  # noise differs by time of day (a quiet night is relatively noisier): scale by phase
        # the time of day in _CYCLE_POINTS buckets (a day is a whole number of them)
        ticks = _TICKS_PER_S[checked.index.unit]
        phase = (checked.index.asi8 // (int(DAY_S) // _CYCLE_POINTS * ticks)) % _CYCLE_POINTS
        sigma = np.maximum(1.4826 * _median_by(np.abs(resid - centre), phase), floor)
    z = (resid - centre) / sigma
    side = z if direction == "up" else (-z if direction == "down" else np.abs(z))
    point = side >= threshold
    # Rolling medians of a month of 10-second points are costly: they are computed exactly, but
    # only where they can reach their threshold (at least half their window past it).
    if direction == "up":
        maybe = _median_reaches(z >= level_threshold, level_points)
    elif direction == "down":
        maybe = _median_reaches(z <= -level_threshold, level_points)
    else:
        maybe = _median_reaches(z >= level_threshold, level_points) | _median_reaches(
            z <= -level_threshold, level_points
        )
    at = np.flatnonzero(maybe)
    roll = _rolling_median_at(z, level_points, at)
    level = np.zeros(n, dtype=bool)
    level[at] = (
        roll if direction == "up" else (-roll if direction == "down" else np.abs(roll))
    ) >= level_threshold
    # the spread around the local level, so a level shift does not pass for a variance change
    local = _rolling_high_median(resid, variance_points)
    deviation = np.abs(resid - local)
    # a point's deviation counts towards the spread of nearby windows: against the smallest
    # sigma of all, it can only count too often, never too rarely
    maybe = _median_reaches(
        deviation >= variance_ratio * float(sigma.min()) / 1.4826, variance_points
    )
    at = np.flatnonzero(maybe)
    spread = 1.4826 * _rolling_median_at(
        deviation, variance_points, at, min_periods=variance_points // 2
    )
    variance = np.zeros(n, dtype=bool)
    variance[at] = np.nan_to_num(spread / sigma[at]) >= variance_ratio
    flags = point | level | variance
    out: list[Anomaly] = []
    times = checked.index
    for a, b in _runs(flags, bridge=2):
        seg = slice(a, b + 1)
        points = b - a + 1
        if not point[seg].any() and points < level_points:
            continue  # a short stretch only a rolling statistic noticed: not enough evidence
        worst = a + int(np.argmax(np.abs(z[seg])))
        level_share = abs(float(np.median(z[seg])))
        if burst:
            kind = "error_burst"
        elif (
            variance[seg].mean() >= 0.5
            and level_share < max(level_threshold / 2, 0.4 * float(np.median(np.abs(z[seg]))))
            and points > 1
        ):
            kind = "variance_change"
        elif points <= spike_points:
            kind = "spike"
        else:
            kind = "level_shift"
        e = expected[worst]
        width = threshold * sigma[worst]
        band = np.array([e - width + centre, e + width + centre])
        low, high = _inverse(band, transform)
        out.append(
            Anomaly(
                series=label,
                kind=kind,
                start=times[a],
                end=times[b],
                points=points,
                expected=float(_inverse(np.array([e + centre]), transform)[0]),
                low=float(low),
                high=float(high),
                observed=float(checked.iloc[worst]),
                score=float(z[worst]),
            )
        )
    return out
