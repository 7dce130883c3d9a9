"""Demand forecasts of a served model: request rate ahead, with prediction intervals, from the
model that did best in a rolling-origin backtest.

Candidates (each fitted on the last ``train_cycles`` weeks, or days when the series is shorter
than a week before the backtest):

* ``seasonal_naive_daily`` / ``seasonal_naive_weekly``: the value one day / one week before.
  The better of the two in the backtest is the *floor*: every MASE is relative to it, so a
  model is only worth choosing when it beats the best naive, not merely the daily one.
* ``ets``: statsforecast's AutoETS with the daily season (only where a day has at most 24
  steps, as ETS allows), ``theta``: AutoTheta with the longest usable season, ``mstl``: MSTL of
  the daily and weekly seasons with an AutoETS trend.
* ``arimax``: statsforecast's ARIMA(2,0,0) with the seasonal values as regressors: the value a
  week, a day, a week and a day, and two weeks before (all known for any horizon up to a day).
  A regression on the seasonal naives whose AR errors carry how this week differs from the
  last: on a series that repeats week to week, like the flights schedule, the weekly naive is
  hard to beat, and this is the one candidate that does (see benchmarks/aiops.py). It is fitted
  on one week more than the others (the two-week lag needs it), so it needs ``train_cycles`` + 1
  weeks before the first backtest origin and drops out, with a note, on shorter series (or when
  its fit fails).

Backtest: ``backtest_windows`` origins spread over the last week (a week / windows apart: 21
hours for hourly steps and the default 8, so each falls at another hour and day), or over the
last day when the series has less than three weeks, and never closer than the horizon (weekly
seasons need a week before the first origin for the naive, two for MSTL and Theta); the last
ends where the series does. The candidates are judged in two ways, by what a fit costs:

* *at every origin* of that span (148 for hourly steps and a 2 h horizon): the naives, which
  cost nothing, and arimax, refitted once a day of the span on the weeks before that day and its
  coefficients applied at each origin of the day (7 fits instead of 148, the forecasts a
  statsforecast ``predict`` would give from those coefficients). The chosen one is the lowest
  MAE among these, a naive on ties, with no margin: the best seasonal naive is the *floor*, every
  MASE is relative to it, so a model is only worth choosing when it beats the best naive, not
  merely the daily one.
* *at the windows* only: ETS, Theta and MSTL, fitted at each window's origin on the data before
  it. The best of them replaces the choice above only when its MAE is at least ``margin`` (10 %)
  below the chosen model's MAE at the same windows: a handful of windows is a noisy judge.

Judging arimax at a handful of windows with a margin, as all fitted models were before, kept the
weekly naive more than half the time on the flights year. Measured there (each forecast from
the series before its origin only), as MASE against the weekly naive: at 1,155 origins (three
in every 21 h, so at every hour of the day), the old rule 0.79, this one 0.73 (0.77 without
ETS, Theta and MSTL; 0.78 with a 20 % margin for them). At all 8,086 hourly origins after four
weeks, choosing among the naives and arimax alone: 0.78 (arimax always: 0.83); with a 5 % /
10 % margin for arimax 0.80 / 0.83; with one arimax fit for the whole span instead of one a day
0.82; over the last two weeks instead of one 0.89 (the older week misleads more than it
informs); with the mean of arimax and the weekly naive as one more candidate 0.79 (always:
0.84), so it is not one. benchmarks/aiops.py, calling this at its own origins: 0.98 at 96 (the
old rule 1.01), 0.86 at 288 (the old rule 0.83): samples that small cannot tell the two apart.

Intervals are *conformal*: the signed errors of the chosen model in the backtest, per step
ahead, give the ``1 - quantile`` and ``quantile`` quantiles added to the point forecast (a
finite-sample rank, so with few windows the band is wide rather than falsely narrow). This holds
for every candidate alike and needs no distributional assumption; a rate is never below 0.

statsforecast 2 ships its models compiled (C++, no numba since 2.0): nothing is compiled at
first use; importing it takes about 2 s, and it is imported only when a model needs it. A fit
takes 0.1-0.7 s on three weeks of hourly steps (MSTL the slowest; arimax about 0.04 s), so a
forecast with the default 8 backtest windows takes about 7 s, nearly all of it ETS, Theta and
MSTL at the windows (the naives and arimax at every origin: about 0.3 s).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "MODELS",
    "DemandForecast",
    "demand_from_history",
    "forecast_demand",
    "parse_duration",
]

#: Candidate models, simplest first (ties go to the earlier one).
MODELS = ("seasonal_naive_weekly", "seasonal_naive_daily", "ets", "theta", "mstl", "arimax")
NAIVE = ("seasonal_naive_weekly", "seasonal_naive_daily")
#: judged at every step of the backtest span: the naives cost nothing, arimax is fitted once a
#: day of the span and its coefficients applied at each origin of that day
DENSE = (*NAIVE, "arimax")
DAY_S = 86_400
WEEK_S = 7 * DAY_S


def parse_duration(value: str | float | timedelta, what: str = "duration") -> float:
    """Seconds from ``90s``, ``2m``, ``2h``, ``7d``, a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            seconds = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
        except (ValueError, KeyError):
            raise InvalidInput(f"bad {what} {value!r}: use e.g. 90s, 2m, 2h or 7d") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"bad {what} {value!r}: must be a finite, non-negative duration")
    return seconds


@dataclass(frozen=True)
class DemandForecast:
    """The forecast of a request-rate series and how its model was chosen.

    ``frame``: one row per step ahead, indexed by the start of the step (UTC), with ``mean``,
    ``lower`` and ``upper`` (requests/s; the ``1 - quantile`` and ``quantile`` quantiles).
    ``backtest``: per candidate, its MAE, MASE (MAE / the best seasonal naive's MAE at the same
    origins) and ``origins``: how many it was judged at (``dense_origins`` for the naives and
    arimax, ``windows`` for the others).
    """

    model: str
    step_s: float
    horizon_steps: int
    quantile: float
    frame: pd.DataFrame
    backtest: dict[str, dict[str, float]]
    baseline: str  # the best seasonal naive, the MASE denominator
    windows: int
    train_points: int
    history_end: pd.Timestamp
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: each seasonal naive's MAE at every step of the backtest span (how the floor is chosen)
    naive_mae: dict[str, float] = field(default_factory=dict)
    margin: float = 0.1
    #: how many origins the candidates judged at every step (the naives, arimax) were judged at
    dense_origins: int = 0

    @property
    def mase(self) -> float:
        """The chosen model's backtest MASE against the best seasonal naive."""
        return self.backtest[self.model]["mase"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "mase": round(self.mase, 4),
            "baseline": self.baseline,
            "step_s": self.step_s,
            "horizon_steps": self.horizon_steps,
            "quantile": self.quantile,
            "lower_quantile": round(1 - self.quantile, 6),
            "backtest": {
                "windows": self.windows,
                "margin": self.margin,
                "dense_origins": self.dense_origins,
                "naive_mae_every_step": {k: round(v, 4) for k, v in self.naive_mae.items()},
                "train_points": self.train_points,
                "candidates": {
                    k: {m: round(v, 4) for m, v in d.items()} for k, d in self.backtest.items()
                },
            },
            "history_end": self.history_end.isoformat(),
            "forecast": [
                {
                    "start": ts.isoformat(),
                    "mean": round(float(r["mean"]), 4),
                    "lower": round(float(r.lower), 4),
                    "upper": round(float(r.upper), 4),
                }
                for ts, r in self.frame.iterrows()
            ],
            "notes": list(self.notes),
        }


def demand_from_history(frame: pd.DataFrame, step_s: float | None = None) -> pd.Series:
    """Requests per second from an ops history (``timestamp`` = end of each interval,
    ``requests``, ``interval_s``), summed into steps of ``step_s`` (default: 1 h when the
    history spans at least two weeks, else 5 min; never finer than the recorded interval), each
    step labelled by its start; a step's rate is its requests over its recorded seconds. A step
    with no recorded interval is a gap: InvalidInput names it (the server was not running, so
    its demand is unknown, not zero).

    Replicas sharing a log root each record their own rows for the same wall-clock time: their
    requests add up, and a second counts once however many replicas recorded it (the seconds
    are those covered by at least one interval), so the rate is the model's total demand, not
    one replica's."""
    import numpy as np
    import pandas as pd

    if frame.empty:
        raise InvalidInput("the ops history has no rows")
    frame = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))
    if not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values("timestamp", kind="stable")
    interval = (
        pd.to_numeric(frame["interval_s"], errors="coerce")
        if "interval_s" in frame.columns
        else pd.Series(np.nan, index=frame.index)
    )
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    diffs = stamps.diff().dt.total_seconds()
    recorded = float(np.nanmedian(interval)) if interval.notna().any() else float("nan")
    if not math.isfinite(recorded):
        recorded = float(np.nanmedian(diffs)) if len(frame) > 1 else 10.0
    span = (stamps.iloc[-1] - stamps.iloc[0]).total_seconds()
    if step_s is None:
        step_s = 3600.0 if span >= 2 * WEEK_S else 300.0
    step_s = max(float(step_s), recorded)
    requests = pd.to_numeric(frame["requests"], errors="coerce")
    if requests.isna().any():
        first = stamps[requests.isna()].iloc[0]
        raise InvalidInput(
            f"the ops history has {int(requests.isna().sum())} intervals without a request "
            f"count (first at {first.isoformat()})"
        )
    # an interval ending at t counts for the step holding its start (t - interval); a step's
    # rate is its requests over the seconds recorded in it, so a step only partly recorded
    # (the first, the current one) gives its rate, not a diluted one
    seconds = interval.fillna(recorded).to_numpy(dtype=float)
    starts = stamps - pd.to_timedelta(seconds, unit="s")
    step = pd.Timedelta(seconds=step_s)
    data = pd.DataFrame(
        {"requests": requests.to_numpy(dtype=float), "seconds": _covered(starts, seconds)},
        index=pd.DatetimeIndex(starts),
    )
    summed = data.resample(step).sum(min_count=1)
    empty = summed["seconds"].isna() | (summed["seconds"] <= 0)
    if empty.any():
        missing = summed.index[empty]
        raise InvalidInput(
            f"the ops history has gaps: {len(missing)} steps of {step_s:g} s without any "
            f"recorded interval (first at {missing[0].isoformat()}); forecast from after the "
            "gap with --since"
        )
    out = summed["requests"] / summed["seconds"]
    out.name = "requests_per_s"
    return out


def _covered(starts: pd.Series, seconds: np.ndarray) -> np.ndarray:
    """The seconds of each interval (``starts`` + ``seconds``) not already covered by an
    interval that starts earlier: the wall-clock time it adds. One server's intervals follow
    each other, so each keeps its own length (an overlap of clock jitter, under 1 % of the
    interval or 50 ms, is ignored); replicas' intervals overlap, and their shared seconds
    count once."""
    import numpy as np

    begin = starts.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    end = begin + seconds
    order = np.argsort(begin, kind="stable")
    out = seconds.copy()
    reach = -np.inf
    for i in order:
        overlap = min(max(reach - begin[i], 0.0), seconds[i])
        if overlap > max(0.05, 0.01 * seconds[i]):
            out[i] = seconds[i] - overlap
        reach = max(reach, end[i])
    return out


def _check_series(series: pd.Series) -> tuple[pd.Series, float]:
    import numpy as np
    import pandas as pd

    if not isinstance(series, pd.Series) or not isinstance(series.index, pd.DatetimeIndex):
        raise InvalidInput("a demand series must be a pandas Series on a DatetimeIndex")
    if len(series) < 3:
        raise InvalidInput(f"a demand series needs at least 3 points, got {len(series)}")
    index = series.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InvalidInput(
            f"the demand series has {int(bad.sum())} missing or non-finite values (NaN), first "
            f"at {index[int(np.argmax(bad))].isoformat()}; fill or cut them first"
        )
    if (values < 0).any():
        first = index[int(np.argmax(values < 0))]
        raise InvalidInput(f"the demand series has negative rates (first at {first.isoformat()})")
    diffs = np.diff(index.asi8)
    if (diffs <= 0).any():
        raise InvalidInput("the demand series' timestamps must be strictly increasing")
    step_ns = int(np.median(diffs))
    irregular = diffs != step_ns
    if irregular.any():
        at = int(np.argmax(irregular))
        raise InvalidInput(
            f"the demand series has gaps or an irregular step: {int(irregular.sum())} of "
            f"{len(diffs)} steps differ from {step_ns / 1e9:g} s (first after "
            f"{index[at].isoformat()}, next point {index[at + 1].isoformat()})"
        )
    return pd.Series(values, index=index, name=series.name), step_ns / 1e9


def _seasons(step_s: float) -> tuple[int, int]:
    daily = round(DAY_S / step_s)
    if daily < 2 or abs(daily * step_s - DAY_S) > 1e-6 * DAY_S:
        raise InvalidInput(
            f"a demand step of {step_s:g} s does not divide a day into at least two steps; "
            "use a step such as 5 min or 1 h"
        )
    return daily, 7 * daily


def train_points(name: str, cycle: int, train_cycles: int, weekly: int) -> int:
    """How many points before an origin candidate ``name`` is fitted on."""
    return (train_cycles + 1) * weekly if name == "arimax" else train_cycles * cycle


def _lags(daily: int, weekly: int) -> tuple[int, ...]:
    return (weekly, daily, weekly + daily, 2 * weekly)


def _arimax_fit(y: np.ndarray, daily: int, weekly: int) -> np.ndarray:
    """arimax's coefficients fitted on ``y``: intercept, one per lag, then the two AR terms."""
    import numpy as np
    from statsforecast.models import ARIMA

    lags = _lags(daily, weekly)
    ts = np.arange(max(lags), len(y))
    if len(ts) < weekly // 2:
        raise InvalidInput(f"arimax needs {max(lags) + weekly // 2} points, got {len(y)}")
    model = ARIMA(order=(2, 0, 0), include_mean=True)
    with warnings.catch_warnings():
        # a schedule that repeats exactly makes the seasonal values collinear; the least-squares
        # fit is still the forecast wanted (any of the equal weightings predicts the same)
        warnings.filterwarnings("ignore", message=".*rank-deficient")
        model.fit(y[ts], X=np.column_stack([y[ts - lag] for lag in lags]))
    coef = model.model_["coef"]
    names = ["intercept", *(f"ex_{k + 1}" for k in range(len(lags))), "ar1", "ar2"]
    out = np.array([float(coef.get(name, 0.0)) for name in names])
    if not np.isfinite(out).all():
        raise ArithmeticError("arimax fit gave non-finite coefficients")
    return out


def _arimax_apply(
    coef: np.ndarray, y: np.ndarray, origins: np.ndarray, h: int, daily: int, weekly: int
) -> np.ndarray:
    """The ``h``-step forecasts (one row per origin) of the regression with AR(2) errors whose
    coefficients are ``coef``, at each origin (an index into ``y``, at most ``len(y)``: the data
    before it is known, the origin itself not). What statsforecast's ``predict`` gives for the
    same coefficients; applying them at many origins costs one fit, not one per origin."""
    import numpy as np

    lags = _lags(daily, weekly)
    origins = np.asarray(origins, dtype=np.int64)

    def regression(t: np.ndarray) -> np.ndarray:  # h <= daily: every lag is already observed
        return coef[0] + sum(coef[1 + k] * y[t - lag] for k, lag in enumerate(lags))

    ar1, ar2 = coef[-2], coef[-1]
    prev2 = y[origins - 2] - regression(origins - 2)
    prev1 = y[origins - 1] - regression(origins - 1)
    out = np.empty((len(origins), h))
    for j in range(h):
        err = ar1 * prev1 + ar2 * prev2
        out[:, j] = regression(origins + j) + err
        prev1, prev2 = err, prev1
    return out


def _arimax(y: np.ndarray, h: int, daily: int, weekly: int) -> np.ndarray:
    import numpy as np

    coef = _arimax_fit(y, daily, weekly)
    return _arimax_apply(coef, y, np.array([len(y)]), h, daily, weekly)[0]


def _fit_predict(name: str, y: np.ndarray, h: int, daily: int, weekly: int) -> np.ndarray:
    """Point forecast of ``h`` steps after ``y`` by candidate ``name``."""
    import numpy as np

    if name in NAIVE:
        season = weekly if name == "seasonal_naive_weekly" else daily
        reps = np.arange(h) % season
        return y[len(y) - season + reps]
    if name == "arimax":
        return _arimax(np.asarray(y, dtype=float), h, daily, weekly)
    try:
        from statsforecast.models import MSTL, AutoETS, AutoTheta
    except ImportError as exc:  # pragma: no cover - the aiops extra is missing
        raise InvalidInput(
            f"forecast model {name!r} needs statsforecast: pip install 'modelloop[aiops]'"
        ) from exc
    use_weekly = len(y) >= 2 * weekly
    model: Any
    if name == "ets":
        model = AutoETS(season_length=daily)
    elif name == "theta":
        model = AutoTheta(season_length=weekly if use_weekly else daily)
    elif name == "mstl":
        model = MSTL(
            season_length=[daily, weekly] if use_weekly else [daily],
            trend_forecaster=AutoETS(model="ZZN"),
        )
    else:  # pragma: no cover - names are checked before
        raise InvalidInput(f"unknown forecast model {name!r}")
    out = model.forecast(y=np.asarray(y, dtype=float), h=h)
    return np.asarray(out["mean"], dtype=float)


def _conformal(errors: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``errors`` at the finite-sample rank ceil((n+1)q) (the largest
    error when there are too few for that rank)."""
    import numpy as np

    ordered = np.sort(errors)
    n = len(ordered)
    rank = min(max(math.ceil((n + 1) * q), 1), n)
    return float(ordered[rank - 1])


def forecast_demand(
    series: pd.Series,
    horizon: str | float | timedelta = "2h",
    *,
    quantile: float = 0.95,
    models: tuple[str, ...] | list[str] | None = None,
    backtest_windows: int = 8,
    train_cycles: int = 3,
    margin: float = 0.1,
) -> DemandForecast:
    """Forecast a request-rate series (requests/s on a regular UTC index) ``horizon`` ahead
    (a duration, or seconds), with the ``1 - quantile`` / ``quantile`` band, by the candidate
    of :data:`MODELS` (or of ``models``) that wins the rolling-origin backtest: the best
    seasonal naive unless a fitted model's MAE is ``margin`` below it (see the module).

    InvalidInput when the series has NaNs, gaps or an irregular step, or is too short for two
    days of training plus the backtest (weekly candidates need two weeks and drop out, with a
    note, when there is less)."""
    import numpy as np
    import pandas as pd

    if not 0.5 < quantile < 1:
        raise InvalidInput(f"quantile must be between 0.5 and 1 (exclusive), got {quantile}")
    if not 0 <= margin < 1:
        raise InvalidInput(f"margin must be in [0, 1), got {margin}")
    if backtest_windows < 3:
        raise InvalidInput(f"backtest_windows must be at least 3, got {backtest_windows}")
    chosen_models = tuple(models) if models is not None else MODELS
    unknown = [m for m in chosen_models if m not in MODELS]
    if unknown or not chosen_models:
        raise InvalidInput(f"unknown forecast models {unknown}; known: {list(MODELS)}")
    y_series, step_s = _check_series(series)
    daily, weekly = _seasons(step_s)
    horizon_s = parse_duration(horizon, "horizon")
    h = math.ceil(horizon_s / step_s - 1e-9)
    if h < 1:
        raise InvalidInput(f"horizon {horizon!r} is shorter than the series' step ({step_s:g} s)")
    if h > daily:
        raise InvalidInput(
            f"horizon {horizon!r} is longer than a day ({daily} steps of {step_s:g} s); "
            "forecast at most a day ahead"
        )
    y = y_series.to_numpy()
    n = len(y)

    # origins spread over the last week when there is room for it (every hour of the day and
    # day of the week has its say), else over the last day; never closer than the horizon
    def span(cycle: int) -> tuple[int, int]:
        spacing = max(h, cycle // backtest_windows)
        return spacing, (backtest_windows - 1) * spacing + h

    spacing, backtest_span = span(weekly)
    if n - backtest_span < 2 * weekly:
        spacing, backtest_span = span(daily)
    need_daily = 2 * daily + backtest_span
    if n < need_daily:
        raise InvalidInput(
            f"the demand series is too short for the daily season: {n} points of {step_s:g} s, "
            f"needs at least {need_daily} (two days to fit, plus {backtest_windows} backtest "
            f"windows {spacing} steps apart)"
        )
    notes: list[str] = []
    first_origin = n - backtest_span
    weekly_ok = first_origin >= weekly  # a week before the first origin: the weekly naive
    candidates = list(chosen_models)
    if not weekly_ok:
        if "seasonal_naive_weekly" in candidates:
            notes.append(
                f"weekly season left out: {n} points, the weekly naive needs {weekly} (a "
                f"week) before a backtest of {backtest_span} more"
            )
        candidates = [m for m in candidates if m != "seasonal_naive_weekly"]
    cycle = weekly if weekly_ok else daily
    if "arimax" in candidates and first_origin < train_points("arimax", 0, train_cycles, weekly):
        candidates.remove("arimax")
        notes.append(
            f"arimax left out: it is fitted on {train_cycles + 1} weeks before the first of the "
            f"backtest origins, the series has {first_origin} points there"
        )
    if "ets" in candidates and daily > 24:
        candidates.remove("ets")
        notes.append(f"ets left out: its season is at most 24 steps, a day here has {daily}")
    naive_in = [m for m in NAIVE if m in candidates]
    if not naive_in:  # the floor is always computed, even when not offered as a choice
        naive_in = list(NAIVE) if weekly_ok else ["seasonal_naive_daily"]
    if not candidates:
        raise InvalidInput("no forecast model can be used on this series (see the notes)")
    dense = np.arange(first_origin, n - h + 1)  # every origin of the backtest span
    truth = np.stack([y[dense + j] for j in range(h)], axis=1)
    errors: dict[str, np.ndarray] = {}  # per candidate: one row per origin, one column per step
    for name in naive_in:
        season = weekly if name == "seasonal_naive_weekly" else daily
        errors[name] = truth - np.stack([y[dense + j - season] for j in range(h)], axis=1)
    if "arimax" in candidates:
        # refitted once a day of the span, on the weeks before that day, its coefficients
        # applied at each origin of the day: a day's staleness, a seventh of the fits
        need = train_points("arimax", cycle, train_cycles, weekly)
        pred = np.empty((len(dense), h))
        try:
            for first in range(0, len(dense), daily):
                at = dense[first : first + daily]
                coef = _arimax_fit(y[at[0] - need : at[0]], daily, weekly)
                pred[first : first + daily] = _arimax_apply(coef, y, at, h, daily, weekly)
        except (ValueError, ArithmeticError) as exc:
            candidates.remove("arimax")
            notes.append(f"arimax left out: its fit failed in the backtest ({exc})")
        else:
            errors["arimax"] = truth - pred
    # the fitted models that cost a fit per origin are judged at the windows only, each fitted
    # on the data before its window
    origins = np.array([first_origin + k * spacing for k in range(backtest_windows)])
    at_windows = origins - first_origin  # rows of the dense errors at the windows' origins
    for name in [m for m in candidates if m not in DENSE]:
        errs = np.empty((backtest_windows, h))
        try:
            for k, o in enumerate(origins):
                start = max(0, o - train_points(name, cycle, train_cycles, weekly))
                errs[k] = y[o : o + h] - _fit_predict(name, y[start:o], h, daily, weekly)
        except (ValueError, ArithmeticError) as exc:  # a fit that fails on this stretch
            candidates.remove(name)
            notes.append(f"{name} left out: its fit failed in the backtest ({exc})")
            continue
        errors[name] = errs
    if not candidates:
        raise InvalidInput(f"no forecast model could be fitted on this series: {notes}")
    mae = {name: float(np.mean(np.abs(e))) for name, e in errors.items()}
    naive_mae = {name: mae[name] for name in naive_in}
    baseline = min(naive_in, key=lambda m: (naive_mae[m], naive_in.index(m)))

    def ratio(value: float, floor: float) -> float:
        return value / floor if floor > 0 else (0.0 if value == 0 else math.inf)

    def window_mae(name: str) -> float:
        e = errors[name]
        return float(np.mean(np.abs(e[at_windows] if name in DENSE else e)))

    floor_windows = window_mae(baseline)
    backtest = {
        name: {
            "mae": mae[name],
            "mase": ratio(mae[name], naive_mae[baseline] if name in DENSE else floor_windows),
            "origins": float(len(errors[name])),
        }
        for name in errors
    }
    order = {m: i for i, m in enumerate(MODELS)}

    def best(names: list[str]) -> str | None:
        return min(names, key=lambda m: (round(mae[m], 12), order[m])) if names else None

    def choose() -> str:
        # first the candidate judged at every step with the lowest MAE (a naive on ties): a
        # week of origins is a fair judge without a margin
        model = best([m for m in candidates if m in DENSE])
        # then a model judged at the windows only replaces it when it beats it there by
        # ``margin``: a handful of windows is a noisy judge
        windowed = best([m for m in candidates if m not in DENSE])
        if windowed is not None and (
            model is None or mae[windowed] <= (1 - margin) * window_mae(model)
        ):
            model = windowed
        assert model is not None  # candidates is never empty here
        return model

    model = choose()
    while True:
        start = max(0, n - train_points(model, cycle, train_cycles, weekly))
        try:
            point = np.maximum(_fit_predict(model, y[start:], h, daily, weekly), 0.0)
            break
        except (ValueError, ArithmeticError) as exc:  # the fit on the latest data failed
            if model in NAIVE:
                raise
            notes.append(f"{model} left out: its fit on the latest data failed ({exc})")
            candidates.remove(model)
            model = choose()
    lo = np.array([_conformal(errors[model][:, j], 1 - quantile) for j in range(h)])
    hi = np.array([_conformal(errors[model][:, j], quantile) for j in range(h)])
    step = pd.Timedelta(seconds=step_s)
    index = pd.date_range(y_series.index[-1] + step, periods=h, freq=step, name="start")
    frame = pd.DataFrame(
        {
            "mean": point,
            "lower": np.maximum(point + np.minimum(lo, 0.0), 0.0),
            "upper": np.maximum(point + np.maximum(hi, 0.0), 0.0),
        },
        index=index,
    )
    return DemandForecast(
        model=model,
        step_s=step_s,
        horizon_steps=h,
        quantile=quantile,
        frame=frame,
        backtest=backtest,
        baseline=baseline,
        windows=backtest_windows,
        train_points=min(train_points(model, cycle, train_cycles, weekly), n),
        history_end=y_series.index[-1] + step,
        notes=tuple(notes),
        naive_mae=naive_mae,
        margin=margin,
        dense_origins=len(dense),
    )
