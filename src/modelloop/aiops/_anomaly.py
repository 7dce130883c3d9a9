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
   bend it), interpolated back; plus a level: the centred rolling median of a day of the
   deseasonalised series. Other seasons (e.g. weekly, through MSTL) only when asked for. A
   series shorter than two days has no usable season: its expectation is its median.
3. *Score*: residual / (1.4826·MAD of the residuals at that time of day), with a floor (1 for
   counts: Poisson noise; 5 % for logs) so a flat series does not turn every blip into an
   anomaly.
4. *Flag*: points past ``threshold`` (spikes), a centred rolling median of scores past
   ``level_threshold`` (sustained shifts too small for a single point), and a rolling robust
   spread past ``variance_ratio`` times the usual one (variance changes). Flags closer than two
   points merge into one anomaly; it is an ``error_burst`` on an error series, a
   ``variance_change`` when the spread moved and the level did not, a ``spike`` when it lasts at
   most ``spike_points``, else a ``level_shift``.

Every anomaly carries its series, kind, span, the expected value and band (back in the series'
units) and the observed value at its worst point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise InvalidInput(f"series {name!r}: timestamps must be strictly increasing")
    diffs = np.asarray((index[1:] - index[:-1]).total_seconds(), dtype=float)
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


def _expected(y: np.ndarray, step_s: float, seasons_s: Sequence[float]) -> np.ndarray:
    """Trend + seasonality from robust (M)STL; the median when no season fits twice."""
    import numpy as np
    import pandas as pd

    n = len(y)
    periods = sorted({round(s / step_s) for s in seasons_s})
    if not periods:
        day = max(3, round(DAY_S / step_s))
        if n <= day:
            return np.full(n, float(np.median(y)))
        return np.asarray(
            pd.Series(y).rolling(day, center=True, min_periods=1).median(), dtype=float
        )
    # The decomposition runs on bucket medians, at most _CYCLE_POINTS per shortest season: a
    # median ignores a spike inside its bucket, and the expectation of a smooth, coarse series
    # cannot chase the noise of each point (which would shrink the residuals and their spread).
    factor = max(1, round(periods[0] / _CYCLE_POINTS))
    full = n // factor * factor
    coarse = np.median(y[:full].reshape(-1, factor), axis=1)
    if full < n:
        coarse = np.append(coarse, np.median(y[full:]))
    cps = [max(2, round(p / factor)) for p in periods]
    from statsmodels.tsa.seasonal import MSTL, STL

    # Seasonal windows spanning every cycle: the profile is (nearly) the same each day and week,
    # so an anomaly on one day cannot bend the expectation of that day towards itself.
    windows = [max(7, 2 * (len(coarse) // c) + 1) for c in cps]
    if len(cps) == 1:
        fit = STL(coarse, period=cps[0], seasonal=windows[0], robust=True).fit()
        seasonal = np.asarray(fit.seasonal)
    else:
        fit = MSTL(coarse, periods=cps, windows=windows, stl_kwargs={"robust": True}).fit()
        seasonal = np.asarray(fit.seasonal).sum(axis=1)
    if factor > 1:
        centres = np.arange(len(coarse)) * factor + (factor - 1) / 2.0
        seasonal = np.interp(np.arange(n), centres, seasonal)
    # The level: a centred rolling median of a day of the deseasonalised series. An anomaly
    # shorter than half a day cannot move it, so it stands out whole; a change that lasts
    # longer becomes the new normal after half a day.
    day = max(3, round(DAY_S / step_s))
    level = pd.Series(y - seasonal).rolling(day, center=True, min_periods=1).median()
    return np.asarray(level, dtype=float) + seasonal


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
    import pandas as pd

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
    mad = float(np.median(np.abs(resid - centre)))
    floor = {"counts": 1.0, "log": 0.05, "log1p": 0.05}.get(
        transform, 1e-9 + 1e-3 * float(np.median(np.abs(y)))
    )
    sigma = np.full(n, max(1.4826 * mad, floor))
    if use:  # noise differs by time of day (a quiet night is relatively noisier): scale by phase
        phase = ((checked.index.asi8 // 10**9) % int(DAY_S)) // max(1, int(DAY_S) // _CYCLE_POINTS)
        dev = pd.Series(np.abs(resid - centre)).groupby(phase).transform("median")
        sigma = np.maximum(1.4826 * dev.to_numpy(dtype=float), floor)
    z = (resid - centre) / sigma
    side = z if direction == "up" else (-z if direction == "down" else np.abs(z))
    point = side >= threshold
    roll = pd.Series(z).rolling(level_points, center=True, min_periods=1).median().to_numpy()
    level_side = roll if direction == "up" else (-roll if direction == "down" else np.abs(roll))
    level = level_side >= level_threshold
    # the spread around the local level, so a level shift does not pass for a variance change
    local = pd.Series(resid).rolling(variance_points, center=True, min_periods=1).median()
    spread = 1.4826 * (
        pd.Series(np.abs(resid - local.to_numpy()))
        .rolling(variance_points, center=True, min_periods=variance_points // 2)
        .median()
        .to_numpy()
    )
    variance = np.nan_to_num(spread / sigma) >= variance_ratio
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
