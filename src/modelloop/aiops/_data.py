"""Series that ship with the project: operational metrics with anomalies injected at known times,
and the demand of the NYC flights 2013 data (departures per hour) scaled to request rates.

Both are generated or read locally; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INJECTED", "InjectedSeries", "Injection", "flights_demand", "injected_series"]


@dataclass(frozen=True)
class Injection:
    """One anomaly put into a generated series: ``start`` and ``end`` are inclusive."""

    series: str
    kind: str
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass(frozen=True)
class InjectedSeries:
    """A frame of operational series (``requests``, ``latency_p95_ms``, ``errors_5xx``) on a
    regular UTC index, and the anomalies injected into it (none in a clean series)."""

    frame: pd.DataFrame
    injections: tuple[Injection, ...]
    step_s: float


#: What :func:`injected_series` injects: (series, kind, day, hour, minute, points, factor).
#: Multiplicative for requests and latency; for errors the factor is added per interval; for a
#: variance change it multiplies the noise.
INJECTED: tuple[tuple[str, str, int, int, int, int, float], ...] = (
    ("requests", "spike", 8, 13, 0, 2, 2.2),
    ("requests", "level_shift", 10, 9, 0, 48, 0.45),
    ("latency_p95_ms", "level_shift", 12, 15, 0, 24, 1.8),
    ("latency_p95_ms", "spike", 14, 4, 0, 1, 4.0),
    ("latency_p95_ms", "variance_change", 16, 10, 0, 48, 6.0),
    ("errors_5xx", "error_burst", 18, 19, 0, 6, 20.0),
    ("requests", "spike", 19, 20, 0, 1, 2.5),
)


def injected_series(
    days: int = 21, step_s: float = 300.0, seed: int = 0, inject: bool = True
) -> InjectedSeries:
    """Three weeks of five-minute operational series of one model with daily and weekly
    seasonality (a midday peak, quieter weekends), latency following load, and Poisson errors;
    with ``inject`` the anomalies of :data:`INJECTED` are put in at known times."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = int(days * 86_400 / step_s)
    index = pd.date_range("2026-01-05", periods=n, freq=pd.Timedelta(seconds=step_s), tz="UTC")
    hour = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    weekday = index.day_of_week.to_numpy()
    daily = (
        0.25
        + 0.75 * np.exp(-(((hour - 13.0) / 4.0) ** 2))
        + 0.2 * np.exp(-(((hour - 19.5) / 1.5) ** 2))
    )
    # weekends are quieter; the change eases in over the night rather than at midnight sharp
    day_pos = weekday + hour / 24.0
    ease = np.clip((day_pos - 4.9) / 0.3, 0, 1) - np.clip((day_pos - 6.9) / 0.3, 0, 1)
    weekly = 1.0 - 0.4 * ease
    rate = 400.0 * daily * weekly * np.exp(rng.normal(0, 0.04, n))
    load = rate.copy()  # latency and errors follow the usual load, not the injected one
    noise_scale = np.full(n, 0.08)
    lat_factor = np.ones(n)
    err_add = np.zeros(n)
    injections: list[Injection] = []
    if inject:
        for series, kind, day, hh, mm, points, factor in INJECTED:
            at = int((day * 86_400 + hh * 3600 + mm * 60) / step_s)
            span = slice(at, at + points)
            if series == "requests":
                rate[span] *= factor
            elif kind == "variance_change":
                noise_scale[span] *= factor
            elif series == "latency_p95_ms":
                lat_factor[span] *= factor
            else:
                err_add[span] += factor
            injections.append(Injection(series, kind, index[at], index[at + points - 1]))
    requests = rng.poisson(rate).astype(float)
    latency = (35.0 + 0.06 * load) * lat_factor * np.exp(rng.normal(0, 1, n) * noise_scale)
    errors = rng.poisson(0.3 + 0.001 * load + err_add).astype(float)
    frame = pd.DataFrame(
        {"requests": requests, "latency_p95_ms": latency, "errors_5xx": errors}, index=index
    )
    frame.index.name = "timestamp"
    return InjectedSeries(frame, tuple(injections), float(step_s))


def flights_demand(requests_per_departure: float = 1800.0) -> pd.Series:
    """Scheduled departures per hour of the NYC flights 2013 data (all of 2013, every hour,
    cancelled flights included: they were demand), as requests per second: each departure
    stands for ``requests_per_departure`` requests in its hour. Daily and weekly seasonality,
    holidays and the quieter winter weeks are all there."""
    import numpy as np
    import pandas as pd

    from modelloop.data._flights import flights_csv

    raw = pd.read_csv(
        flights_csv(), usecols=["year", "month", "day", "hour"], dtype="int64", engine="c"
    )
    stamps = pd.to_datetime(raw[["year", "month", "day", "hour"]])
    counts = stamps.value_counts().sort_index()
    full = pd.date_range("2013-01-01", "2013-12-31 23:00", freq="h")
    departures = counts.reindex(full, fill_value=0)
    local = departures.index.tz_localize(
        "America/New_York", nonexistent="NaT", ambiguous=np.ones(len(departures), dtype=bool)
    )
    # every UTC hour of the year, none missing: the spring-forward hour has no local clock
    # time and the repeated autumn hour holds all of that local hour's departures in its first
    # occurrence (night hours: a handful of flights at most), so the index is regular
    counts_utc = (
        departures[local.notna()]
        .set_axis(local[local.notna()])
        .tz_convert("UTC")
        .groupby(level=0)
        .sum()
    )
    hours = pd.date_range(counts_utc.index[0], counts_utc.index[-1], freq="h")
    out = counts_utc.reindex(hours, fill_value=0).astype(float) * requests_per_departure / 3600.0
    out.name = "requests_per_s"
    out.index.name = "timestamp"
    return out
