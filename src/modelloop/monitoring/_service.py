"""One monitoring run of a registered model: window → drift, quality, live performance → stored
result → alerts. The CLI and the retraining loop call :func:`run_monitor`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.monitoring._alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStateStore,
    MonitorResult,
)
from modelloop.monitoring._drift import DriftMonitor
from modelloop.monitoring._profile import CategoricalProfile, ReferenceProfile
from modelloop.monitoring._quality import check_quality
from modelloop.monitoring._reference import TASK_TAG, load_reference
from modelloop.monitoring._summary import WindowSummary
from modelloop.monitoring._windows import LastRows, PredictionLog, TimeRange, parse_window

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.monitoring._performance import PerformanceReport
    from modelloop.store import MonitoringRecord, Store

__all__ = ["MonitorOutcome", "StoreAlertStates", "feedback_dir", "run_monitor"]

Progress = Callable[[int], None]  # called with the number of rows read so far
#: Segments with fewer labelled rows are reported but left out of the gap between segments.
MIN_SEGMENT_ROWS = 100


@dataclass(frozen=True)
class MonitorOutcome:
    """What one monitoring run found, and where it was stored."""

    model: str
    version: int
    result: MonitorResult
    summary: WindowSummary
    profile: ReferenceProfile
    record: MonitoringRecord | None
    events: list[AlertEvent] = field(default_factory=list)
    seconds: float = 0.0


class StoreAlertStates(AlertStateStore):
    """Alert states kept in the metadata store, so they survive restarts and every change is
    recorded as an alert event."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, model: str, rule: str) -> AlertState | None:
        rec = self.store.get_alert(model, rule)
        if rec is None:
            return None
        return AlertState(
            rec.model_name, rec.rule, rec.firing, rec.since, rec.updated_at, rec.value, rec.message
        )

    def put(self, state: AlertState) -> None:
        from modelloop.store import AlertRecord

        prev = self.store.get_alert(state.model, state.rule)
        changed = (prev is None and state.firing) or (
            prev is not None and prev.firing != state.firing
        )
        status = ("firing" if state.firing else "resolved") if changed else None
        self.store.put_alert(
            AlertRecord(
                state.model,
                state.rule,
                state.firing,
                state.since,
                state.updated_at,
                state.value,
                state.message,
            ),
            event_status=status,
        )

    def list(self, model: str | None = None, firing_only: bool = False) -> list[AlertState]:
        return [
            AlertState(r.model_name, r.rule, r.firing, r.since, r.updated_at, r.value, r.message)
            for r in self.store.list_alerts(model, firing_only=firing_only)
        ]


def feedback_dir(home: Path, model: str) -> Path:
    """Where ground-truth labels for a model's predictions are kept (Parquet: request_id, label)."""
    return Path(home) / "feedback" / model


def run_monitor(
    client: Client,
    model: str,
    *,
    window: str = "day",
    data: pd.DataFrame | str | Path | None = None,
    labels: pd.DataFrame | str | Path | None = None,
    segment: str | None = None,
    rules: Iterable[AlertRule] = (),
    notifiers: Iterable[Any] = (),
    now: datetime | None = None,
    store_result: bool = True,
    progress: Progress | None = None,
) -> MonitorOutcome:
    """Monitor ``model`` (``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``) over one window.

    The current data is, in order: ``data`` (a DataFrame, a Parquet or CSV file, or a folder of
    Parquet segments), else the model's prediction log under ``$MODELLOOP_HOME/predictions``.
    The window (``"day"``, ``"30m"``, ``"10000rows"``, ...) applies to prediction logs. Labels
    (``request_id``, ``label``) come from ``labels`` or ``$MODELLOOP_HOME/feedback/<model>``;
    with them, live accuracy/AUC/F1 (or MAE/RMSE) is computed per day, per version and per
    ``segment``. The result is stored, then ``rules`` are evaluated and ``notifiers`` told.
    """
    from modelloop.registry import parse_model_spec

    started = time.perf_counter()
    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    profile = load_reference(client, mv)
    task = mv.tags.get(TASK_TAG, "classification")
    win = parse_window(window)
    source = _source(client, ref.name, data)

    columns = [c for c in profile.columns if c in source.columns]
    if not columns:
        raise InvalidInput(
            f"the current data has none of the {len(profile.columns)} reference columns of "
            f"{mv.name}/{mv.version}"
        )
    monitor = DriftMonitor(columns).fit(profile)
    acc = monitor.accumulator()
    rows = 0
    categorical = [c for c in columns if isinstance(profile[c], CategoricalProfile)]
    for batch in source.batches(win, columns, now=now, dictionary_columns=categorical):
        acc.update(batch)
        rows += batch.num_rows
        if progress:
            progress(rows)
    if rows == 0:
        raise NotFound(f"no rows of {ref.name} in window {window!r}")
    summary = acc.summary()
    drift = monitor.test(summary)
    quality = check_quality(profile, summary, columns=columns)
    performance = _performance(client, ref.name, source, win, labels, task, segment, now)
    span = _span(win, now)
    result = MonitorResult(
        model=ref.name,
        drift=drift,
        quality=quality,
        performance=performance,
        window={
            "spec": window,
            "start": span[0],
            "end": span[1],
            "rows": rows,
            "version": mv.version,
        },
        timestamp=int(time.time() * 1000),
    )
    record = None
    if store_result:
        record = client.store.add_monitoring_result(
            ref.name,
            model_version=mv.version,
            window_start=span[0],
            window_end=span[1],
            num_rows=rows,
            share_drifted=drift.share_drifted,
            dataset_drift=drift.dataset_drift,
            drifted_columns=drift.drifted_columns,
            metrics=_headline(performance),
            payload=result.to_dict(),
            created_at=result.timestamp,
        )
    manager = AlertManager(rules, store=StoreAlertStates(client.store), notifiers=notifiers)
    events = manager.evaluate(result)
    return MonitorOutcome(
        ref.name,
        mv.version,
        result,
        summary,
        profile,
        record,
        events,
        time.perf_counter() - started,
    )


# -- data sources ---------------------------------------------------------------------------


class _Source:
    """Current data as record batches, with the column names it offers."""

    columns: list[str]

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        raise NotImplementedError

    def frame(self, window: Any, columns: list[str], now: datetime | None) -> pd.DataFrame:
        import pyarrow as pa

        batches = list(self.batches(window, columns, now=now))
        if not batches:
            import pandas as pd

            return pd.DataFrame(columns=columns)
        return pa.Table.from_batches(batches).to_pandas()


class _LogSource(_Source):
    def __init__(self, log: PredictionLog) -> None:
        self.log = log
        schema = log.schema()
        if schema is None:
            raise NotFound(f"the prediction log at {log.path} is empty")
        self.columns = list(schema.names)

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        return self.log.batches(window, columns, **kw)


class _FrameSource(_Source):
    """A whole table taken as the window (windows apply only to prediction logs)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.table = frame
        self.columns = [str(c) for c in frame.columns]

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        import pyarrow as pa

        step = 262_144
        for start in range(0, len(self.table), step):
            part = self.table.iloc[start : start + step][columns]
            yield pa.RecordBatch.from_pandas(part, preserve_index=False)


def _source(client: Client, name: str, data: Any) -> _Source:
    import pandas as pd

    if data is None:
        return _LogSource(PredictionLog.for_model(client.settings.home, name))
    if isinstance(data, pd.DataFrame):
        return _FrameSource(data)
    path = Path(data)
    if path.is_dir():
        return _LogSource(PredictionLog(path))
    if not path.is_file():
        raise NotFound(f"no such data file or folder: {path}")
    if path.suffix == ".parquet":
        return _FrameSource(pd.read_parquet(path))
    if path.suffix in (".csv", ".gz", ".zip"):
        return _FrameSource(pd.read_csv(path))
    raise InvalidInput(f"cannot read {path.name}: use a .parquet or .csv file, or a folder")


def _read_labels(path: Path) -> pd.DataFrame | None:
    import pandas as pd

    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files]) if files else None
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _performance(
    client: Client,
    name: str,
    source: _Source,
    window: Any,
    labels: Any,
    task: str,
    segment: str | None,
    now: datetime | None,
) -> PerformanceReport | None:
    import pandas as pd

    from modelloop.monitoring._performance import (
        PerformanceReport,
        join_labels,
        live_performance,
    )

    if labels is None:
        default = feedback_dir(client.settings.home, name)
        labels = _read_labels(default) if default.exists() else None
    elif not isinstance(labels, pd.DataFrame):
        labels = _read_labels(Path(labels))
    has_inline = "label" in source.columns
    if labels is None and not has_inline:
        return None
    if segment and segment not in source.columns:
        raise InvalidInput(f"segment column {segment!r} is not in the current data")
    score = "proba_1" if task == "classification" and "proba_1" in source.columns else None
    wanted = ["request_id", "prediction", "timestamp", "model_version", "label", segment, score]
    cols = [c for c in dict.fromkeys(wanted) if c and c in source.columns]
    frame = source.frame(window, cols, now)
    if labels is not None:
        frame = join_labels(frame, labels)
    if frame.empty:
        return None
    if task == "classification" and frame["prediction"].dtype != frame["label"].dtype:
        frame["prediction"] = frame["prediction"].astype(frame["label"].dtype)
    # One report, three views: overall and per segment (with the gap between segments), per
    # model version, and per day for the timeline.
    versions = ["model_version"] if "model_version" in frame.columns else []
    by_segment = live_performance(
        frame, task=task, score=score, segment=segment, min_segment_rows=MIN_SEGMENT_ROWS
    )
    by_version = live_performance(frame, task=task, score=score, by=versions)
    rows = [*by_segment.rows, *by_version.rows]
    keys = [*by_segment.keys, *by_version.keys]
    if "timestamp" in frame.columns:
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        freq = "1h" if ts.max() - ts.min() < pd.Timedelta(days=2) else "1D"
        timeline = live_performance(frame, task=task, score=score, by=versions, freq=freq)
        rows += timeline.rows
        keys += timeline.keys
    return PerformanceReport(
        task, by_segment.overall, tuple(rows), by_segment.gaps, tuple(dict.fromkeys(keys))
    )


def _headline(perf: PerformanceReport | None) -> dict[str, float | None]:
    if perf is None:
        return {}
    return dict(perf.overall.metrics)


def _span(window: Any, now: datetime | None) -> tuple[int | None, int | None]:
    if isinstance(window, LastRows):
        return None, None
    rng: TimeRange = window.resolve(now)

    def ms(dt: datetime | None) -> int | None:
        return None if dt is None else int(dt.timestamp() * 1000)

    return ms(rng.start), ms(rng.end)
