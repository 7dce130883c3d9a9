"""One monitoring run of a registered model: window → drift, quality, live performance → stored
result → alerts. The CLI and the retraining loop call :func:`run_monitor`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._fs import is_url
from modelloop.exceptions import InvalidInput, NotFound, SchemaMismatch
from modelloop.monitoring._alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStateStore,
    MetricAbove,
    MetricBelow,
    MonitorResult,
)
from modelloop.monitoring._calibrate_model import load_calibration
from modelloop.monitoring._drift import DriftMonitor
from modelloop.monitoring._logfiles import duckdb_paths, log_folder
from modelloop.monitoring._profile import CategoricalProfile, ReferenceProfile
from modelloop.monitoring._quality import check_quality
from modelloop.monitoring._reference import TASK_TAG, load_reference
from modelloop.monitoring._sources import Source, open_source, read_url, sql_ident, sql_paths
from modelloop.monitoring._summary import WindowAccumulator, WindowSummary
from modelloop.monitoring._versions import VersionWindow
from modelloop.monitoring._windows import LastRows, TimeRange, parse_window

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.monitoring._performance import MetricRow, PerformanceReport
    from modelloop.store import AlertRecord, ModelVersion, MonitoringRecord, Store

__all__ = ["MonitorOutcome", "StoreAlertStates", "feedback_dir", "run_monitor"]

Progress = Callable[[int], None]  # called with the number of rows read so far
#: Segments with fewer labelled rows are reported but left out of the gap between segments.
MIN_SEGMENT_ROWS = 100
#: DuckDB's memory budget for joining labels to predictions (it spills to disk beyond it).
DUCKDB_MEMORY = "256MB"


@dataclass(frozen=True)
class MonitorOutcome:
    """What one monitoring run found, and where it was stored. ``version`` is the monitored
    version (whose reference the inputs are compared with); ``result.versions`` are the versions
    that served the window."""

    model: str
    version: int
    result: MonitorResult
    summary: WindowSummary
    profile: ReferenceProfile
    record: MonitoringRecord | None
    events: list[AlertEvent] = field(default_factory=list)
    seconds: float = 0.0
    #: per served version with a reference: (its profile, the summary of its own outputs)
    version_details: Mapping[int, tuple[ReferenceProfile, WindowSummary]] = field(
        default_factory=dict
    )


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

    When the version has a drift calibration (:func:`calibrate_model`), the inputs are also
    judged against their learned normal ranges (``result.calibrated``); the window's start
    places it in its season (windows without a time range are placed at ``now``).

    Inputs are compared with the reference of the version ``model`` names. Each version that
    served rows of the window gets a :class:`VersionWindow` in ``result.versions``: its rows,
    its outputs against its own reference, live metrics of its own labelled rows. Metric rules
    on a metric the model's task lacks are refused before any data is read.
    """
    from modelloop.registry import parse_model_spec

    started = time.perf_counter()
    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    profile = load_reference(client, mv)
    task = mv.tags.get(TASK_TAG, "classification")
    rules = list(rules)
    _check_metric_rules(rules, task, mv)  # before any data is read
    now = now or datetime.now(UTC)  # one clock for every pass of this run
    win = parse_window(window)
    fixed = win if isinstance(win, LastRows) else win.resolve(now)
    source = open_source(client.settings.home, ref.name, data, fixed)

    if segment and segment not in source.columns:  # before any data is read
        raise InvalidInput(f"segment column {segment!r} is not in the current data")
    inputs = [c for c in profile.columns if not _is_output(c)]
    missing = [c for c in inputs if c not in source.columns]
    if missing:
        raise SchemaMismatch(
            f"the current data of {mv.name} lacks input column(s) {missing} of version "
            f"{mv.version}'s reference",
            column=missing[0],
        )
    # Inputs: every served row against the monitored version's reference. Outputs: each
    # version's own rows against its own reference (a retrain leaves older versions' rows in
    # the window, and their outputs say nothing about the new version).
    monitor = DriftMonitor(inputs).fit(profile)
    acc = monitor.accumulator()
    per_version = _VersionPass(client, mv, profile, source.columns)
    rows = 0
    categorical = [c for c in inputs if isinstance(profile[c], CategoricalProfile)]
    categorical += per_version.categorical
    # Shadow answers were never served: their rows copy served inputs and carry another
    # model's outputs, so they stay out of drift and quality (and out of live accuracy below).
    routed = "route" in source.columns
    extra = [c for c in (VERSION_COLUMN,) if c in source.columns]
    wanted = [*inputs, *per_version.outputs, *extra, *(["route"] if routed else [])]
    for batch in source.batches(fixed, wanted, now=now, dictionary_columns=categorical):
        if routed:
            batch = _served(batch)
        acc.update(batch.select(inputs))
        per_version.update(batch)
        rows += batch.num_rows
        if progress:
            progress(rows)
    if rows == 0:
        raise NotFound(f"no rows of {ref.name} in window {window!r}")
    summary = acc.summary()
    # The dataset verdict is about the inputs; drift of the model's outputs is reported apart.
    drift = monitor.test(summary)
    quality = check_quality(profile, summary, columns=inputs)
    calibration = load_calibration(client, mv)
    calibrated = None
    if calibration is not None:  # opt-in: the version was calibrated on its own history
        start = fixed.start if isinstance(fixed, TimeRange) and fixed.start else now
        calibrated = calibration.judge(drift, start)
    performance = _performance(
        client, ref.name, source, fixed, labels, task, segment, profile, mv.version
    )
    versions = per_version.results(performance)
    own = next((v for v in versions if v.version == mv.version), None)
    span = (None, None) if isinstance(fixed, LastRows) or data is not None else _span(fixed)
    result = MonitorResult(
        model=ref.name,
        drift=drift,
        prediction_drift=own.prediction_drift if own else None,
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
        versions=versions,
        calibrated=calibrated,
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
        per_version.details(),
    )


def _check_metric_rules(rules: list[AlertRule], task: str, mv: ModelVersion) -> None:
    """A rule on a metric the model's task never has would stay silent forever: refuse it."""
    from modelloop.monitoring._performance import CLASSIFICATION, REGRESSION

    own = CLASSIFICATION if task == "classification" else REGRESSION
    wrong = [r for r in rules if isinstance(r, MetricAbove | MetricBelow) and r.metric not in own]
    if wrong:
        names = ", ".join(f"{r.name} ({r.metric})" for r in wrong)
        raise InvalidInput(
            f"{mv.name} v{mv.version} is a {task} model, whose live metrics are "
            f"{', '.join(own)}; these alert rules watch another metric: {names}"
        )


# -- versions -------------------------------------------------------------------------------

_OUTPUTS = ("prediction",)
#: The prediction log's column naming the version that answered a request.
VERSION_COLUMN = "model_version"


def _is_output(column: str) -> bool:
    return column in _OUTPUTS or column.startswith("proba_")


def _outputs_of(profile: ReferenceProfile, available: set[str]) -> list[str]:
    """The output columns of a version's reference that the data holds. For two classes one
    probability column is the complement of the other: monitor one."""
    probas = [c for c in profile.columns if c.startswith("proba_")]
    outputs = [c for c in _OUTPUTS if c in profile.columns]
    outputs += probas[-1:] if len(probas) == 2 else probas
    return [c for c in outputs if c in available]


@dataclass
class _VersionPart:
    profile: ReferenceProfile | None
    columns: list[str]
    monitor: DriftMonitor | None  # fitted on the version's outputs; None when none can be judged
    acc: WindowAccumulator | None
    note: str = ""
    rows: int = 0


class _VersionPass:
    """The outputs of each served version, summarised against that version's own reference
    profile while the window streams by. Rows that name no version (data without the
    ``model_version`` column, or a missing value) are the monitored version's."""

    def __init__(
        self, client: Client, monitored: ModelVersion, profile: ReferenceProfile, columns: list[str]
    ) -> None:
        self.client, self.name, self.default = client, monitored.name, monitored.version
        self.available = set(columns)
        self.has_version = VERSION_COLUMN in self.available
        self.outputs = [c for c in columns if _is_output(c)]
        own = self._part(profile, "")
        self.categorical = [c for c in own.columns if isinstance(profile[c], CategoricalProfile)]
        self.parts: dict[int, _VersionPart] = {monitored.version: own}
        self._details: dict[int, tuple[ReferenceProfile, WindowSummary]] = {}

    def _part(self, profile: ReferenceProfile | None, note: str) -> _VersionPart:
        cols = _outputs_of(profile, self.available) if profile is not None else []
        monitor = DriftMonitor(cols).fit(profile) if profile and cols else None
        acc = monitor.accumulator() if monitor is not None else None
        return _VersionPart(profile, cols, monitor, acc, note)

    def _lookup(self, version: int) -> _VersionPart:
        part = self.parts.get(version)
        if part is None:
            try:
                mv = self.client.store.get_model_version(self.name, version)
                part = self._part(load_reference(self.client, mv), "")
            except NotFound as exc:  # its rows are counted; its outputs cannot be judged
                part = self._part(None, f"outputs not tested: {exc}")
            self.parts[version] = part
        return part

    def update(self, batch: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self.has_version:
            self._add(self.default, batch)
            return
        col = batch.column(batch.schema.get_field_index(VERSION_COLUMN))
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        values = pc.unique(col).to_pylist()
        if len(values) == 1:  # the usual batch: one version answered all of it, no copy
            self._add(self.default if values[0] is None else _version_number(values[0]), batch)
            return
        for value in values:
            mask = pc.is_null(col) if value is None else pc.fill_null(pc.equal(col, value), False)
            self._add(self.default if value is None else _version_number(value), batch.filter(mask))

    def _add(self, version: int, rows: Any) -> None:
        part = self._lookup(version)
        part.rows += rows.num_rows
        if part.acc is not None:
            part.acc.update(rows.select(part.columns))

    def results(self, performance: PerformanceReport | None) -> tuple[VersionWindow, ...]:
        """One entry per version that served rows, in version order."""
        out = []
        for version in sorted(v for v, p in self.parts.items() if p.rows):
            part = self.parts[version]
            drift = quality = None
            if part.monitor is not None and part.acc is not None and part.profile is not None:
                summary = part.acc.summary()
                drift = part.monitor.test(summary)
                quality = check_quality(part.profile, summary, columns=part.columns)
                self._details[version] = (part.profile, summary)
            live = _version_row(performance, version)
            out.append(
                VersionWindow(
                    version,
                    part.rows,
                    drift,
                    quality,
                    labelled=live.n if live else 0,
                    metrics=dict(live.metrics) if live else {},
                    note=part.note,
                )
            )
        return tuple(out)

    def details(self) -> dict[int, tuple[ReferenceProfile, WindowSummary]]:
        return dict(self._details)


def _version_number(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or (number != value and str(number) != str(value).strip()):
        raise InvalidInput(
            f"the {VERSION_COLUMN} column holds {value!r}; it must hold version numbers"
        )
    return number


def _version_row(perf: PerformanceReport | None, version: int) -> MetricRow | None:
    if perf is None:
        return None
    wanted = {VERSION_COLUMN: str(version)}
    return next((r for r in perf.rows if dict(r.group) == wanted), None)


# -- data sources ---------------------------------------------------------------------------


def _labels_relation(con: Any, client: Client, name: str, labels: Any) -> str | None:
    """The labels as a DuckDB relation with one row per request: the latest correction wins
    (by the label's ``timestamp`` when present, then by segment file name, which is ordered
    by time)."""
    import pandas as pd

    if isinstance(labels, str) and is_url(labels):
        labels = read_url(labels)
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
        con.register("labels_frame", frame.assign(__row=range(len(frame))))
        raw, cols = "labels_frame", set(labels.columns)
        order = [*(["timestamp"] if "timestamp" in cols else []), "__row"]
    else:
        files: list[Any]
        if labels is None:  # the model's feedback (under the log root), when it has any yet
            files = duckdb_paths(con, client.settings.home, "feedback", name)
            if not files:
                return None
        else:
            path = Path(labels)
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files or not files[0].exists():
                raise NotFound(f"no labels at {path}")
        quoted = sql_paths(files)
        if str(files[0]).endswith(".csv"):
            raw = (
                f"(SELECT *, row_number() OVER () AS file_row_number FROM "
                f"read_csv([{quoted}], filename = true, union_by_name = true))"
            )
        else:
            raw = (
                f"read_parquet([{quoted}], filename = true, file_row_number = true, "
                "union_by_name = true, hive_partitioning = false)"
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
    version: int,
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
        return _live_metrics(
            con, client, name, source, window, labels, task, segment, profile, version
        )
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
    version: int,
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
    cols = [c for c in ("prediction", "timestamp", segment) if c and c != VERSION_COLUMN]
    cols = [c for c in dict.fromkeys(cols) if c in source.columns]
    # Rows that name no version are the monitored version's, as in the drift pass.
    answered = (
        f"COALESCE(TRY_CAST(p.{sql_ident(VERSION_COLUMN)} AS BIGINT), {int(version)})"
        if VERSION_COLUMN in source.columns
        else str(int(version))
    )
    select = ", ".join(
        [
            *(f"p.{sql_ident(c)}" for c in cols),
            f"{answered} AS {VERSION_COLUMN}",
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
