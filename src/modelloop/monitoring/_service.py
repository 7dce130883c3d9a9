"""One monitoring run of a registered model: window → drift, quality, live performance → stored
result → alerts. The CLI and the retraining loop call :func:`run_monitor`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, NotFound, SchemaMismatch
from modelloop.monitoring._alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStateStore,
    MonitorResult,
)
from modelloop.monitoring._drift import DriftMonitor
from modelloop.monitoring._logfiles import log_folder
from modelloop.monitoring._profile import CategoricalProfile, ReferenceProfile
from modelloop.monitoring._quality import check_quality
from modelloop.monitoring._reference import TASK_TAG, load_reference
from modelloop.monitoring._sources import Source, open_source, sql_ident, sql_paths
from modelloop.monitoring._summary import WindowSummary
from modelloop.monitoring._windows import LastRows, TimeRange, parse_window

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.monitoring._performance import PerformanceReport
    from modelloop.store import AlertRecord, MonitoringRecord, Store

__all__ = ["MonitorOutcome", "StoreAlertStates", "feedback_dir", "run_monitor"]

Progress = Callable[[int], None]  # called with the number of rows read so far
#: Segments with fewer labelled rows are reported but left out of the gap between segments.
MIN_SEGMENT_ROWS = 100
#: DuckDB's memory budget for joining labels to predictions (it spills to disk beyond it).
DUCKDB_MEMORY = "256MB"


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
        return None if rec is None else _state(rec)

    def put(self, state: AlertState) -> None:
        self.store.put_alert(_record(state))

    def transition(self, state: AlertState) -> bool:
        return self.store.transition_alert(_record(state)) is not None

    def list(self, model: str | None = None, firing_only: bool = False) -> list[AlertState]:
        return [_state(r) for r in self.store.list_alerts(model, firing_only=firing_only)]


def _state(rec: AlertRecord) -> AlertState:
    return AlertState(
        rec.model_name, rec.rule, rec.firing, rec.since, rec.updated_at, rec.value, rec.message
    )


def _record(state: AlertState) -> AlertRecord:
    from modelloop.store import AlertRecord

    return AlertRecord(
        state.model,
        state.rule,
        state.firing,
        state.since,
        state.updated_at,
        state.value,
        state.message,
    )


def feedback_dir(home: Path, model: str) -> Path:
    """Where ground-truth labels for a model's predictions are kept (Parquet: request_id, label):
    the folder :func:`append_feedback` writes to."""
    return log_folder(home, "feedback", model)


def _served(batch: Any) -> Any:
    """The rows of a batch that were served (route other than ``shadow``, or no route)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    route = batch.column(batch.schema.get_field_index("route"))
    if pa.types.is_dictionary(route.type):
        route = route.cast(pa.string())
    shadow = pc.fill_null(pc.equal(route, "shadow"), False)
    return batch.filter(pc.invert(shadow))


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
    with them, live accuracy/AUC/F1 (or MAE/RMSE) is computed per hour, per version and per
    ``segment``. The result is stored, then ``rules`` are evaluated and ``notifiers`` told.
    """
    from modelloop.registry import parse_model_spec

    started = time.perf_counter()
    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    profile = load_reference(client, mv)
    task = mv.tags.get(TASK_TAG, "classification")
    now = now or datetime.now(UTC)  # one clock for every pass of this run
    win = parse_window(window)
    fixed = win if isinstance(win, LastRows) else win.resolve(now)
    source = open_source(client.settings.home, ref.name, data)

    if segment and segment not in source.columns:  # before any data is read
        raise InvalidInput(f"segment column {segment!r} is not in the current data")
    inputs = [c for c in profile.columns if not _is_output(c)]
    probas = [c for c in profile.columns if c.startswith("proba_")]
    # For two classes one probability column is the complement of the other: monitor one.
    outputs = [c for c in _OUTPUTS if c in profile.columns]
    outputs += probas[-1:] if len(probas) == 2 else probas
    missing = [c for c in inputs if c not in source.columns]
    if missing:
        raise SchemaMismatch(
            f"the current data of {mv.name} lacks input column(s) {missing} of version "
            f"{mv.version}'s reference",
            column=missing[0],
        )
    outputs = [c for c in outputs if c in source.columns]
    columns = inputs + outputs
    acc = DriftMonitor(columns).fit(profile).accumulator()
    rows = 0
    categorical = [c for c in columns if isinstance(profile[c], CategoricalProfile)]
    # Shadow answers were never served: their rows copy served inputs and carry another
    # model's outputs, so they stay out of drift and quality (and out of live accuracy below).
    routed = "route" in source.columns and "route" not in columns
    wanted = [*columns, "route"] if routed else columns
    for batch in source.batches(fixed, wanted, now=now, dictionary_columns=categorical):
        if routed:
            batch = _served(batch).select(columns)
        acc.update(batch)
        rows += batch.num_rows
        if progress:
            progress(rows)
    if rows == 0:
        raise NotFound(f"no rows of {ref.name} in window {window!r}")
    summary = acc.summary()
    # The dataset verdict is about the inputs; drift of the model's outputs is reported apart.
    drift = DriftMonitor(inputs).fit(profile).test(summary)
    output_drift = DriftMonitor(outputs).fit(profile).test(summary) if outputs else None
    quality = check_quality(profile, summary, columns=columns)
    performance = _performance(client, ref.name, source, fixed, labels, task, segment, profile)
    span = (None, None) if isinstance(fixed, LastRows) or data is not None else _span(fixed)
    result = MonitorResult(
        model=ref.name,
        drift=drift,
        prediction_drift=output_drift,
        quality=quality,
        performance=performance,
        window={
            "spec": window,
            "start": span[0],
            "end": span[1],
            "rows": rows,
            "version": mv.version,
        },
        timestamp=int(now.timestamp() * 1000),
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

_OUTPUTS = ("prediction",)


def _is_output(column: str) -> bool:
    return column in _OUTPUTS or column.startswith("proba_")


def _labels_relation(con: Any, client: Client, name: str, labels: Any) -> str | None:
    """The labels as a DuckDB relation with one row per request: the latest correction wins
    (by the label's ``timestamp`` when present, then by segment file name, which is ordered
    by time)."""
    import pandas as pd

    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
        con.register("labels_frame", frame.assign(__row=range(len(frame))))
        raw, cols = "labels_frame", set(labels.columns)
        order = [*(["timestamp"] if "timestamp" in cols else []), "__row"]
    else:
        if labels is None:  # the model's feedback folder, when it has any labels yet
            folder = feedback_dir(client.settings.home, name)
            files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
            if not files:
                return None
        else:
            path = Path(labels)
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files or not files[0].exists():
                raise NotFound(f"no labels at {path}")
        quoted = sql_paths(files)
        if files[0].suffix == ".csv":
            raw = (
                f"(SELECT *, row_number() OVER () AS file_row_number FROM "
                f"read_csv([{quoted}], filename = true, union_by_name = true))"
            )
        else:
            raw = (
                f"read_parquet([{quoted}], filename = true, file_row_number = true, "
                "union_by_name = true)"
            )
        cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {raw}").fetchall()}
        order = [*(["timestamp"] if "timestamp" in cols else []), "filename", "file_row_number"]
    for needed in ("request_id", "label"):
        if needed not in cols:
            raise SchemaMismatch(f"labels have no column {needed!r}", column=needed)
    # the latest correction wins; rows without a timestamp count as the oldest
    rank = ", ".join(f"{sql_ident(c)} DESC NULLS LAST" for c in order)
    return (
        f"(SELECT request_id, label FROM (SELECT request_id, label, row_number() OVER "
        f"(PARTITION BY request_id ORDER BY {rank}) AS rn FROM {raw}) "
        "WHERE rn = 1 AND label IS NOT NULL)"
    )


def _performance(
    client: Client,
    name: str,
    source: Source,
    window: Any,
    labels: Any,
    task: str,
    segment: str | None,
    profile: ReferenceProfile,
) -> PerformanceReport | None:
    """Live metrics of the labelled predictions in the window. Only labelled rows and the
    columns the metrics need are materialised; the join runs in DuckDB."""
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInput(
            "live performance needs duckdb: pip install 'modelloop[monitoring]'"
        ) from exc

    if "prediction" not in source.columns:
        return None
    con = duckdb.connect()
    spill = client.settings.home / "cache" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    # The join spills to disk past this, so a month of labels does not take the machine's RAM.
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute("SET temp_directory = ?", [str(spill)])
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")  # naive log timestamps are UTC, whatever the host says
    try:
        return _live_metrics(con, client, name, source, window, labels, task, segment, profile)
    except duckdb.Error as exc:
        what = "the labels" if labels is not None else f"the prediction log of {name}"
        raise InvalidInput(f"cannot join {what} to the current data: {exc}") from exc
    finally:
        con.close()


def _live_metrics(
    con: Any,
    client: Client,
    name: str,
    source: Source,
    window: Any,
    labels: Any,
    task: str,
    segment: str | None,
    profile: ReferenceProfile,
) -> PerformanceReport | None:
    from modelloop.monitoring._live import LiveMetricsAccumulator

    table = source.relation(con)
    label_rel = _labels_relation(con, client, name, labels)
    inline = "label" in source.columns and label_rel is None
    if label_rel is None and not inline:
        return None
    if label_rel is not None and "request_id" not in source.columns:
        raise SchemaMismatch(
            "the current data has no request_id to join labels on", column="request_id"
        )
    classes = [c.removeprefix("proba_") for c in profile.columns if c.startswith("proba_")]
    score = f"proba_{classes[-1]}" if task == "classification" and classes else None
    if score is not None and score not in source.columns:
        score = None
    cols = [c for c in ("prediction", "timestamp", "model_version", segment) if c]
    cols = [c for c in dict.fromkeys(cols) if c in source.columns]
    select = ", ".join(
        [
            *(f"p.{sql_ident(c)}" for c in cols),
            *([f"p.{sql_ident(score)} AS score"] if score else []),
        ]
    )
    # The window applies to prediction logs only; a frame or a file is taken whole, as in
    # the drift pass.
    windowed = source.windowed and "timestamp" in source.columns
    where, params = _time_filter(window, windowed)
    where += " AND p.prediction IS NOT NULL"
    if "route" in source.columns:  # a shadow answer was never served: no live accuracy
        where += " AND p.route IS DISTINCT FROM 'shadow'"
    if windowed and isinstance(window, LastRows):
        table = f"(SELECT * FROM {table} ORDER BY timestamp DESC LIMIT {int(window.n)})"
    if inline:
        sql = f"SELECT {select}, p.label FROM {table} p WHERE p.label IS NOT NULL{where}"
    else:
        sql = (
            f"SELECT {select}, l.label FROM {table} p JOIN {label_rel} l "
            f"ON p.request_id = l.request_id WHERE TRUE{where}"
        )
    if task == "classification" and not classes:  # a model without probabilities
        found = con.execute(
            f"SELECT DISTINCT v FROM (SELECT CAST(label AS VARCHAR) v FROM ({sql}) "
            f"UNION SELECT CAST(prediction AS VARCHAR) FROM ({sql})) ORDER BY v",
            params * 2,
        ).fetchall()
        classes = [r[0] for r in found if r[0] is not None]
    acc = LiveMetricsAccumulator(task=task, classes=classes or None, segment=segment)
    reader = con.sql(sql, params=params).to_arrow_reader(262_144)
    for batch in reader or ():  # streamed: only counts are kept, never the labelled rows
        acc.update(batch)
    if acc.empty:
        return None
    return acc.report(min_segment_rows=MIN_SEGMENT_ROWS)


def _time_filter(window: Any, has_timestamp: bool) -> tuple[str, list[Any]]:
    if not has_timestamp or not isinstance(window, TimeRange):
        return "", []
    parts, params = [], []
    if window.start is not None:
        parts.append(" AND p.timestamp >= ?")
        params.append(window.start)
    if window.end is not None:
        parts.append(" AND p.timestamp < ?")
        params.append(window.end)
    return "".join(parts), params


def _headline(perf: PerformanceReport | None) -> dict[str, float | None]:
    if perf is None:
        return {}
    return dict(perf.overall.metrics)


def _span(window: TimeRange) -> tuple[int | None, int | None]:
    def ms(dt: datetime | None) -> int | None:
        return None if dt is None else int(dt.timestamp() * 1000)

    return ms(window.start), ms(window.end)
