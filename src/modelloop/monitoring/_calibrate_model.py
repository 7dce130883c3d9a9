"""History calibration of registered models: learned from the prediction log or a historical
file, stored as a content-addressed JSON blob tagged on the version (:data:`CALIBRATION_TAG`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.monitoring._calibration import DriftCalibration, calibrate, calibrate_frame
from modelloop.monitoring._drift import DriftMonitor
from modelloop.monitoring._profile import ReferenceProfile

if TYPE_CHECKING:
    from modelloop._client import Client
    from modelloop.store import ModelVersion

__all__ = ["CALIBRATION_TAG", "calibrate_model", "load_calibration", "save_calibration"]

#: Version tag holding the sha256 of the calibration blob in the artifact store.
CALIBRATION_TAG = "modelloop.drift_calibration"


def save_calibration(
    client: Client, name: str, version: int, calibration: DriftCalibration
) -> ModelVersion:
    """Store a calibration as a content-addressed JSON blob and tag the version with it."""
    data = json.dumps(calibration.to_dict(), separators=(",", ":"), allow_nan=False).encode()
    digest = client.artifacts.put_bytes(data).digest
    return client.store.set_model_version_tags(
        name, version, {CALIBRATION_TAG: digest}, actor=client.settings.user
    )


def load_calibration(client: Client, mv: ModelVersion) -> DriftCalibration | None:
    """The calibration attached to a version, or None (the mode is opt-in)."""
    digest = mv.tags.get(CALIBRATION_TAG)
    if not digest:
        return None
    return DriftCalibration.from_dict(json.loads(client.artifacts.read_bytes(digest)))


def calibrate_model(
    client: Client,
    model: str,
    *,
    history: str = "14d",
    window: str = "1h",
    season: str | None = None,
    data: Any = None,
    timestamp: str = "timestamp",
    k: float = 3.5,
    min_windows: int = 3,
    min_rows: int = 30,
    now: datetime | None = None,
) -> tuple[ModelVersion, DriftCalibration]:
    """Calibrate ``model`` (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``) on its own past windows
    and attach the calibration to the version.

    The history is ``data`` (a DataFrame, Parquet or CSV file with a ``timestamp`` column) cut
    into windows of ``window``, else the model's prediction log over the last ``history``
    (``14d``, ``8w``, ...) before ``now``, cut into windows of ``window`` (``30m``, ``1h``,
    ``1d``). Columns are the inputs of the version's reference profile.
    """
    from modelloop.monitoring._reference import load_reference
    from modelloop.monitoring._service import _is_output
    from modelloop.registry import parse_model_spec

    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    profile = load_reference(client, mv)
    inputs = [c for c in profile.columns if not _is_output(c)]
    if data is not None:
        frame = _read_history(data)
        cal = calibrate_frame(
            profile,
            frame,
            timestamp=timestamp,
            freq=_pandas_freq(window),
            columns=[c for c in inputs if c in frame.columns],
            season=season,
            k=k,
            min_windows=min_windows,
            min_rows=min_rows,
        )
    else:
        cal = _calibrate_log(client, ref.name, profile, inputs, history, window, season, k,
                             min_windows, min_rows, now or datetime.now(UTC))  # fmt: skip
    return save_calibration(client, mv.name, mv.version, cal), cal


def _duration(spec: str) -> timedelta:
    from modelloop.monitoring._windows import LastDuration, parse_window

    w = parse_window(spec)
    if not isinstance(w, LastDuration):
        raise InvalidInput(f"{spec!r} is not a duration; use e.g. '30m', '1h', '1d', '14d'")
    return w.duration


def _pandas_freq(spec: str) -> str:
    """A window spec (``30m``, ``1h``, ``1d``) as a pandas offset; ``month`` for months."""
    if spec in ("month", "MS"):
        return "MS"
    seconds = int(_duration(spec).total_seconds())
    return f"{seconds}s"


def _read_history(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    from pathlib import Path

    path = Path(data)
    if not path.is_file():
        raise NotFound(f"no historical data at {path}")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def _calibrate_log(
    client: Client,
    name: str,
    profile: ReferenceProfile,
    inputs: list[str],
    history: str,
    window: str,
    season: str | None,
    k: float,
    min_windows: int,
    min_rows: int,
    now: datetime,
) -> DriftCalibration:
    """Past windows read from the prediction log, one time range at a time (bounded memory)."""
    from modelloop.monitoring._service import _served
    from modelloop.monitoring._sources import open_source
    from modelloop.monitoring._windows import TimeRange

    span, step = _duration(history), _duration(window)
    if step > span:
        raise InvalidInput(f"the window {window!r} is longer than the history {history!r}")
    source = open_source(client.settings.home, name, None)
    missing = [c for c in inputs if c not in source.columns]
    if missing:
        raise InvalidInput(f"the prediction log of {name} lacks input column(s) {missing}")
    categorical = [c for c in inputs if profile[c].kind == "categorical"]
    routed = "route" in source.columns  # shadow answers were never served: left out
    wanted = [*inputs, *(["route"] if routed else [])]
    monitor = DriftMonitor(inputs).fit(profile)
    # whole windows only, aligned on the window length from the epoch
    end_s = int(now.timestamp()) // int(step.total_seconds()) * int(step.total_seconds())
    end = datetime.fromtimestamp(end_s, UTC)
    starts = []
    t = end - step
    while t >= end - span:
        starts.append(t)
        t -= step

    def windows() -> Any:
        for start in reversed(starts):
            acc = monitor.accumulator()
            rng = TimeRange(start, start + step)
            for batch in source.batches(rng, wanted, now=now, dictionary_columns=categorical):
                acc.update((_served(batch) if routed else batch).select(inputs))
            if acc.n_rows >= min_rows:
                yield start, acc

    return calibrate(profile, windows(), columns=inputs, season=season, k=k,
                     min_windows=min_windows, window=window)  # fmt: skip
