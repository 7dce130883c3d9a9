"""History-calibrated drift (opt-in): how far is a healthy window normally from the reference?

Real data is not stationary. With a fixed threshold against one reference, a healthy system whose
inputs move with the hour, the weekday or the month is flagged in most windows. A calibration
learns, for each column, the normal range of the window's distance from the reference from the
model's own past windows (the prediction log, or a historical dataset with a timestamp column),
and a window is flagged only when its distance falls outside that range.

**Distance.** The statistic of the default drift rule: the Kolmogorov-Smirnov distance for numeric
columns, the total variation distance for categorical ones (see :mod:`._drift`).

**Season.** With ``season`` (``"hour"`` of day, ``"weekday"``, ``"month"``), each past window is
filed under its season slot (from the window's start, UTC) and a window is judged against the
range learned from past windows of the same slot: 3 p.m. against past 3 p.m. windows. A slot with
fewer than ``min_windows`` past windows falls back to the range learned from all of them (the
verdict says so).

**Range.** Per column and slot: ``center`` = median of the past distances and ``spread`` = 1.4826
x their median absolute deviation (robust: a few drifted windows in the history do not widen
it), floored at the largest sampling standard deviation a distance can have at the window's size,
``0.5 sqrt(1/n_r + 1/n_c)``, so that a quiet history cannot make the range narrower than noise.
The normal range is ``center +- k spread``; a window is flagged for a column when its distance
lies outside it. ``k = 3.5`` by default: about 1 healthy window in 2,000 per column if distances
were normal (the robust spread of a short history is itself noisy, so the real rate is higher).
On the generated seasonal stream of ``benchmarks/drift.py`` (10 columns, a week of hourly history)
it flagged 0.2% of healthy windows and found a 0.15 sd shift within one window; ``k = 4`` flagged
none but took up to 3 windows, ``k = 3`` flagged 1.9%.
The dataset is flagged when the share of flagged columns reaches ``drift_share``.

Distances shrink as windows grow (less sampling noise), so calibrate on windows of the length the
model is monitored with: ``monitor calibrate --window 1h`` for ``monitor run --window 1h``.

For a registered model, :mod:`._calibrate_model` learns a calibration from its prediction log
and stores it with the version; :func:`~modelloop.monitoring.run_monitor` then adds the
calibrated verdict to every result, where the loop's ``calibrated_drift`` trigger reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._drift import DriftMonitor
from modelloop.monitoring._profile import ReferenceProfile
from modelloop.monitoring._result import DriftResult

__all__ = [
    "SEASONS",
    "CalibratedColumn",
    "CalibratedDrift",
    "ColumnCalibration",
    "DriftCalibration",
    "NormalRange",
    "calibrate",
    "calibrate_frame",
    "season_slot",
]

#: Season name -> number of slots.
SEASONS: Mapping[str, int] = MappingProxyType({"hour": 24, "weekday": 7, "month": 12})
FORMAT_VERSION = 1
MAD_TO_SD = 1.4826


def season_slot(season: str | None, when: datetime | None) -> int:
    """The slot of ``when`` (UTC) in ``season``; 0 without a season."""
    if season is None:
        return 0
    if when is None:
        raise InvalidInput(f"a calibration by {season} needs the window's start time")
    t = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    if season == "hour":
        return t.hour
    if season == "weekday":
        return t.weekday()
    if season == "month":
        return t.month - 1
    raise InvalidInput(f"unknown season {season!r}; choose from {sorted(SEASONS)}")


def noise_sd(n_reference: int, n_current: int) -> float:
    """The largest sampling standard deviation of a KS or TV distance at these sizes."""
    if n_reference <= 0 or n_current <= 0:
        return 0.0
    return 0.5 * math.sqrt(1 / n_reference + 1 / n_current)


@dataclass(frozen=True)
class NormalRange:
    """The learned distances of one column in one season slot (``slot`` -1: all slots)."""

    slot: int
    n_windows: int
    center: float
    spread: float
    rows: int  # median rows per past window

    def bounds(self, k: float, n_reference: int, n_current: int) -> tuple[float, float]:
        """``center +- k * max(spread, noise at these sizes)``, the low end at least 0."""
        s = max(self.spread, noise_sd(n_reference, n_current))
        return max(self.center - k * s, 0.0), self.center + k * s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormalRange:
        return cls(
            int(d["slot"]),
            int(d["n_windows"]),
            float(d["center"]),
            float(d["spread"]),
            int(d["rows"]),
        )

    @classmethod
    def learn(cls, slot: int, distances: np.ndarray, rows: np.ndarray) -> NormalRange:
        center = float(np.median(distances))
        mad = float(np.median(np.abs(distances - center)))
        return cls(slot, len(distances), center, MAD_TO_SD * mad, int(np.median(rows)))


@dataclass(frozen=True)
class ColumnCalibration:
    """One column's normal ranges: one per season slot with enough history, and the pooled one."""

    column: str
    method: str
    pooled: NormalRange
    slots: Mapping[int, NormalRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", MappingProxyType(dict(self.slots)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "method": self.method,
            "pooled": self.pooled.to_dict(),
            "slots": [r.to_dict() for r in self.slots.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnCalibration:
        slots = {int(r["slot"]): NormalRange.from_dict(r) for r in d.get("slots", [])}
        return cls(str(d["column"]), str(d["method"]), NormalRange.from_dict(d["pooled"]), slots)


@dataclass(frozen=True)
class CalibratedColumn:
    """One column of a window judged against its learned normal range."""

    column: str
    distance: float | None
    low: float | None
    high: float | None
    slot: int
    n_windows: int
    flagged: bool
    verdict: str  # "normal", "above its normal range", "below its normal range", "not calibrated"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibratedColumn:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as exc:
            raise InvalidInput(f"malformed calibrated column: {exc}") from exc


@dataclass(frozen=True)
class CalibratedDrift:
    """A window's verdict against the learned normal ranges of every calibrated column."""

    columns: tuple[CalibratedColumn, ...]
    season: str | None
    slot: int
    k: float
    drift_share: float

    @property
    def flagged_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns if c.flagged)

    @property
    def n_judged(self) -> int:
        return sum(1 for c in self.columns if c.verdict != "not calibrated")

    @property
    def share_flagged(self) -> float:
        n = self.n_judged
        return len(self.flagged_columns) / n if n else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.n_judged > 0 and self.share_flagged >= self.drift_share

    def __getitem__(self, column: str) -> CalibratedColumn:
        for c in self.columns:
            if c.column == column:
                return c
        raise InvalidInput(f"column {column!r} is not in this calibrated verdict")

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "season": self.season,
            "slot": self.slot,
            "k": self.k,
            "drift_share": self.drift_share,
            # derived, for readers of the JSON (the loop's trigger reads share_flagged)
            "flagged_columns": list(self.flagged_columns),
            "share_flagged": self.share_flagged,
            "dataset_drift": self.dataset_drift,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibratedDrift:
        try:
            return cls(
                columns=tuple(CalibratedColumn.from_dict(c) for c in d["columns"]),
                season=d.get("season"),
                slot=int(d.get("slot", 0)),
                k=float(d["k"]),
                drift_share=float(d["drift_share"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed calibrated drift: {exc!r}") from exc


@dataclass(frozen=True)
class DriftCalibration:
    """Learned normal ranges of every column's distance from the reference; see the module."""

    columns: Mapping[str, ColumnCalibration]
    season: str | None = None
    k: float = 3.5
    min_windows: int = 3
    drift_share: float = 0.5
    n_windows: int = 0
    window: str = ""  # how the history was cut, for readers (e.g. "1h")

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    def judge(self, drift: DriftResult, start: datetime | None = None) -> CalibratedDrift:
        """The calibrated verdict of a window whose default drift result is ``drift`` and
        which starts at ``start`` (needed with a season)."""
        slot = season_slot(self.season, start)
        out: list[CalibratedColumn] = []
        for col in drift.columns:
            cal = self.columns.get(col.column)
            if cal is None or col.statistic is None or col.status:
                why = "no calibration for this column" if cal is None else "no distance"
                out.append(CalibratedColumn(col.column, col.statistic, None, None, slot, 0,
                                            False, "not calibrated", why))  # fmt: skip
                continue
            if col.method != cal.method:
                raise InvalidInput(
                    f"column {col.column!r} was calibrated on {cal.method} distances but judged "
                    f"with {col.method}; use the default drift methods"
                )
            rng, note = cal.slots.get(slot), ""
            if rng is None or rng.n_windows < self.min_windows:
                rng = cal.pooled
                if self.season is not None:
                    note = f"fewer than {self.min_windows} past windows in this {self.season}: "
                    note += "range learned from all of them"
            low, high = rng.bounds(self.k, col.n_reference, col.n_current)
            d = col.statistic
            if d > high:
                verdict = "above its normal range"
            elif d < low:
                verdict = "below its normal range"
            else:
                verdict = "normal"
            out.append(
                CalibratedColumn(
                    col.column,
                    d,
                    low,
                    high,
                    slot,
                    rng.n_windows,
                    verdict != "normal",
                    verdict,
                    note,
                )
            )
        return CalibratedDrift(tuple(out), self.season, slot, self.k, self.drift_share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "season": self.season,
            "k": self.k,
            "min_windows": self.min_windows,
            "drift_share": self.drift_share,
            "n_windows": self.n_windows,
            "window": self.window,
            "columns": [c.to_dict() for c in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftCalibration:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT_VERSION:
            raise InvalidInput("not a drift calibration of a supported format")
        try:
            cols = {c["column"]: ColumnCalibration.from_dict(c) for c in d["columns"]}
            return cls(
                columns=cols,
                season=d.get("season"),
                k=float(d["k"]),
                min_windows=int(d["min_windows"]),
                drift_share=float(d["drift_share"]),
                n_windows=int(d["n_windows"]),
                window=str(d.get("window", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed drift calibration: {exc!r}") from exc


def _check(season: str | None, k: float, min_windows: int) -> None:
    if season is not None and season not in SEASONS:
        raise InvalidInput(f"unknown season {season!r}; choose from {sorted(SEASONS)}")
    if not k > 0:
        raise InvalidInput(f"k must be positive, got {k}")
    if min_windows < 2:
        raise InvalidInput(f"min_windows must be at least 2, got {min_windows}")


def calibrate(
    profile: ReferenceProfile,
    windows: Iterable[tuple[datetime | None, Any]],
    *,
    columns: Iterable[str] | None = None,
    season: str | None = None,
    k: float = 3.5,
    min_windows: int = 3,
    drift_share: float = 0.5,
    window: str = "",
) -> DriftCalibration:
    """Learn the normal ranges from past healthy windows: ``(start, data)`` pairs, where data is
    a table, a :class:`WindowSummary` or a :class:`WindowAccumulator`."""
    _check(season, k, min_windows)
    monitor = DriftMonitor(columns).fit(profile)
    dist: dict[str, list[tuple[int, float, int]]] = {}
    methods: dict[str, str] = {}
    n = 0
    for start, data in windows:
        slot = season_slot(season, start)
        result = monitor.test(data)
        n += 1
        for c in result.columns:
            if c.statistic is None or c.status:
                continue
            dist.setdefault(c.column, []).append((slot, c.statistic, c.n_current))
            methods[c.column] = c.method
    if n < min_windows:
        raise InvalidInput(
            f"a calibration needs at least {min_windows} past windows with data, got {n}"
        )
    cols: dict[str, ColumnCalibration] = {}
    for name, rows in dist.items():
        slots = np.array([r[0] for r in rows])
        d = np.array([r[1] for r in rows])
        sizes = np.array([r[2] for r in rows])
        pooled = NormalRange.learn(-1, d, sizes)
        per = {
            int(s): NormalRange.learn(int(s), d[slots == s], sizes[slots == s])
            for s in np.unique(slots)
        }
        cols[name] = ColumnCalibration(name, methods[name], pooled, per if season else {})
    return DriftCalibration(cols, season, k, min_windows, drift_share, n, window)


def calibrate_frame(
    profile: ReferenceProfile,
    data: Any,
    *,
    timestamp: str = "timestamp",
    freq: str = "1h",
    columns: Iterable[str] | None = None,
    season: str | None = None,
    k: float = 3.5,
    min_windows: int = 3,
    min_rows: int = 30,
    drift_share: float = 0.5,
) -> DriftCalibration:
    """Learn the normal ranges from a historical dataset: its rows are cut into windows of
    ``freq`` (a pandas offset: ``"1h"``, ``"1D"``, ``"MS"`` for calendar months) on the
    ``timestamp`` column; windows with fewer than ``min_rows`` rows are skipped."""
    import pandas as pd

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if timestamp not in frame.columns:
        raise InvalidInput(f"the historical data has no timestamp column {timestamp!r}")
    names = list(columns) if columns is not None else [c for c in profile.columns if c in frame]
    ts = pd.to_datetime(frame[timestamp], utc=True)
    try:
        if freq in ("MS", "month"):  # calendar months: a fixed length would not align
            keys = ts.dt.tz_localize(None).dt.to_period("M").dt.start_time
        else:
            keys = ts.dt.floor(freq)
    except ValueError as exc:
        raise InvalidInput(f"bad freq {freq!r}: {exc}") from exc
    parts = (
        (pd.Timestamp(key).to_pydatetime().replace(tzinfo=UTC), part[names])
        for key, part in frame.groupby(keys, sort=True)
        if len(part) >= min_rows
    )
    return calibrate(
        profile,
        parts,
        columns=names,
        season=season,
        k=k,
        min_windows=min_windows,
        drift_share=drift_share,
        window=freq,
    )
