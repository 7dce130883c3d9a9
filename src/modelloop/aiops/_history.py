"""The operational metric history of ``modelloop serve``: one row per model per interval.

The server hands every answered request, micro-batch, queue depth and refusal to an
:class:`OpsRecorder`, which only adds them to the counters of the current interval (a lock and a
few additions: nothing on the request path waits on I/O). A background thread closes an interval
every ``interval_s`` seconds, turns it into one row per served model (a model with no traffic
still gets a row, so the series has no gaps while the server runs), and writes the rows it holds
as one Parquet segment per model when ``flush_s`` has passed, and at :meth:`OpsRecorder.close`.

Layout: ``$MODELLOOP_HOME/ops/<model>/<segment>.parquet`` (or under ``MODELLOOP_LOG_ROOT`` when
it is a folder) with the columns of :data:`OPS_COLUMNS`; a segment is written to a temporary name
and renamed, so readers never see half a file. When ``MODELLOOP_LOG_ROOT`` is a URL
(``s3://bucket/prefix``), segments go through the log root's writer as the prediction log's do
(:class:`modelloop._logroot.SegmentSink`: one PUT per segment, a local spool while the root is
down), partitioned by hour::

    <root>/ops/model=<model>/date=YYYY-MM-DD/hour=HH/<created_ns>-<host>-<pid>-<token>-<seq>.parquet

:func:`read_ops_history` reads them back (on a URL root, only the hours ``since`` covers).
Several replicas of one model write to the same place, so the history then holds one row per
replica per interval.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._fs import atomic_file
from modelloop._names import check_model_name
from modelloop.exceptions import InvalidInput, NotFound

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "OPS_COLUMNS",
    "OpsRecorder",
    "ops_folder",
    "parse_since",
    "read_ops_history",
    "write_ops_history",
]

log = logging.getLogger("modelloop.aiops")

#: The columns of one history row, in order. Latencies are NaN in an interval without answered
#: requests; ``batch_size`` is the mean rows per micro-batch (NaN without batches).
OPS_COLUMNS = (
    "timestamp",  # end of the interval, UTC
    "model",
    "interval_s",
    "requests",  # answered requests (any status; shadow copies excluded)
    "errors_4xx",
    "errors_5xx",
    "rejected",  # refused before prediction: queue full, too large
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "batch_size",
    "queue_depth",  # the largest depth seen in the interval
    "cpu_percent",  # of one core, the whole process
    "rss_bytes",  # the whole process
    "replica",  # the server process that wrote the row: host-pid-token (None: not recorded)
)

#: Environment variable naming a file that injects a latency fault (for tests and drills): while
#: the file exists, every prediction first waits the number of milliseconds it holds.
FAULT_FILE_ENV = "MODELLOOP_FAULT_LATENCY_FILE"


def ops_folder(home: str | os.PathLike[str], model: str) -> Path:
    """``<root>/ops/<model>`` under the log root of ``home`` (``MODELLOOP_LOG_ROOT`` when it is
    a folder, else ``home``), the model name checked. A URL root keeps the history under
    ``<root>/ops/model=<model>/...`` instead (:mod:`modelloop._logroot`); this folder is then
    not used."""
    from modelloop._logroot import log_root

    root = log_root(home)
    return Path(home if isinstance(root, str) else root) / "ops" / check_model_name(model)


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    import numpy as np

    p50, p95, p99 = np.quantile(np.asarray(values, dtype=float), [0.5, 0.95, 0.99])
    return float(p50), float(p95), float(p99)


class _Interval:
    """What one model saw in the current interval."""

    __slots__ = ("batch_rows", "batches", "e4", "e5", "latencies", "queue", "rejected", "requests")

    def __init__(self) -> None:
        self.requests = self.e4 = self.e5 = self.rejected = 0
        self.batches = self.batch_rows = self.queue = 0
        self.latencies: list[float] = []


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class OpsRecorder:
    """Per-model operational counters, closed every ``interval_s`` and written as Parquet.

    ``request``, ``batch``, ``queue_depth`` and ``rejected`` are cheap and thread-safe; they
    never raise. ``start()`` runs the thread; ``close()`` closes the last (partial) interval and
    writes everything held.
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        *,
        interval_s: float = 10.0,
        flush_s: float | None = None,
        max_pending_rows: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)):
            raise InvalidInput(f"ops interval must be a number of seconds, got {interval_s!r}")
        if not 0.05 <= interval_s <= 3600:
            raise InvalidInput(f"ops interval must be between 0.05 and 3600 s, got {interval_s:g}")
        self.home = Path(home)
        from modelloop._logroot import replica_name, sink_for

        # on a URL log root: the sink the prediction log shares, held so that the last flush
        # (after the server has closed the sinks) still goes up in one PUT or to the spool
        self._sink = sink_for(self.home)
        self.interval_s = float(interval_s)
        # Rows are written in batches: a segment every six intervals, at most a minute apart.
        self.flush_s = float(flush_s) if flush_s is not None else min(6 * interval_s, 60.0)
        self.max_pending_rows = max_pending_rows
        self.clock = clock
        self._lock = threading.Lock()
        self._current: dict[str, _Interval] = {}
        self._models: set[str] = set()
        self._rows: list[dict[str, Any]] = []
        self._oldest: float | None = None  # monotonic time of the oldest unwritten row
        self._dropped = 0
        self._written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu = time.process_time()
        self._started = self._mark = time.monotonic()
        #: this process among the replicas that may share the log root
        self.replica = replica_name()
        self._fault_file = os.environ.get(FAULT_FILE_ENV) or None
        #: seconds every prediction waits first (the injected latency fault; 0.0 without one)
        self.fault_delay_s = 0.0
        self._read_fault()

    # -- the request path ---------------------------------------------------------------------

    def _interval(self, model: str) -> _Interval:
        cur = self._current.get(model)
        if cur is None:
            cur = self._current[model] = _Interval()
            self._models.add(model)
        return cur

    def add_model(self, model: str) -> None:
        """Record rows for ``model`` from now on, even in intervals without traffic."""
        with self._lock:
            self._interval(model)

    def request(self, model: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request of ``model`` (shadow copies are not counted)."""
        if route == "shadow" or not model:
            return
        with self._lock:
            cur = self._interval(model)
            cur.requests += 1
            if 400 <= status < 500:
                cur.e4 += 1
            elif status >= 500:
                cur.e5 += 1
            if status < 400:
                cur.latencies.append(seconds * 1e3)

    def batch(self, model: str, size: int) -> None:
        """Record one micro-batch of ``size`` rows."""
        with self._lock:
            cur = self._interval(model)
            cur.batches += 1
            cur.batch_rows += size

    def queue_depth(self, model: str, depth: int) -> None:
        """Record a queue depth; the interval keeps the largest."""
        with self._lock:
            cur = self._interval(model)
            if depth > cur.queue:
                cur.queue = depth

    def rejected(self, model: str, reason: str = "") -> None:
        """Count one request refused before prediction (a shadow copy's refusal is not counted,
        as its requests are not)."""
        if not model or reason.startswith("shadow"):
            return
        with self._lock:
            self._interval(model).rejected += 1

    # -- the thread ----------------------------------------------------------------------------

    @property
    def rows_written(self) -> int:
        """History rows written to segments so far."""
        return self._written

    @property
    def rows_dropped(self) -> int:
        """History rows given up (too many pending while the folder could not be written)."""
        return self._dropped

    def start(self) -> None:
        """Start the thread that closes intervals and writes segments (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._mark = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="modelloop-ops", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, close the current interval and write every row held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.tick()
        self.flush()
        if self._rows:
            log.error("ops history: %d rows could not be written before shutdown", len(self._rows))

    def _run(self) -> None:
        next_at = self._mark + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.tick()
                self._read_fault()
                if self._oldest is not None and time.monotonic() - self._oldest >= self.flush_s:
                    self.flush()
            except Exception:  # pragma: no cover - a bug here must not kill the thread
                log.exception("ops history: interval failed")
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (a stalled process): skip, no burst
                next_at = time.monotonic() + self.interval_s

    def _read_fault(self) -> None:
        if self._fault_file is None:
            return
        try:
            text = Path(self._fault_file).read_text().strip()
            self.fault_delay_s = max(0.0, min(float(text or 0) / 1e3, 60.0))
        except (OSError, ValueError):
            self.fault_delay_s = 0.0

    def tick(self) -> None:
        """Close the current interval: one row per known model."""
        now_mono = time.monotonic()
        with self._lock:
            current, self._current = self._current, {}
            models = sorted(self._models)
        elapsed = max(now_mono - self._mark, 1e-9)
        self._mark = now_mono
        cpu = time.process_time()
        cpu_percent = 100.0 * (cpu - self._cpu) / elapsed
        self._cpu = cpu
        rss = _rss_bytes()
        stamp = self.clock()
        rows = []
        for model in models:
            cur = current.get(model) or _Interval()
            p50, p95, p99 = _quantiles(cur.latencies)
            rows.append(
                {
                    "timestamp": stamp,
                    "model": model,
                    "interval_s": round(elapsed, 3),
                    "requests": cur.requests,
                    "errors_4xx": cur.e4,
                    "errors_5xx": cur.e5,
                    "rejected": cur.rejected,
                    "latency_p50_ms": p50,
                    "latency_p95_ms": p95,
                    "latency_p99_ms": p99,
                    "batch_size": cur.batch_rows / cur.batches if cur.batches else math.nan,
                    "queue_depth": cur.queue,
                    "cpu_percent": cpu_percent,
                    "rss_bytes": rss,
                    "replica": self.replica,
                }
            )
        if not rows:
            return
        with self._lock:
            over = len(self._rows) + len(rows) - self.max_pending_rows
            if over > 0:  # the folder has not been writable for a long time: keep the newest
                del self._rows[:over]
                self._dropped += over
            self._rows.extend(rows)
            if self._oldest is None:
                self._oldest = now_mono

    def flush(self) -> None:
        """Write the rows held, one segment per model; on failure they are kept for later."""
        import pyarrow as pa

        with self._lock:
            rows, self._rows = self._rows, []
            self._oldest = None
        if not rows:
            return
        by_model: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_model.setdefault(r["model"], []).append(r)
        keep: list[dict[str, Any]] = []
        for model, group in by_model.items():
            data = {c: [r[c] for r in group] for c in OPS_COLUMNS}
            stamps = pa.array([round(t * 1000) for t in data.pop("timestamp")], pa.int64())
            table = pa.table(
                {"timestamp": stamps.cast(pa.timestamp("ms", tz="UTC")), **data}
            ).select(list(OPS_COLUMNS))
            if self._sink is not None:  # never raises on an unreachable root: it spools
                dropped = self._sink.write("ops", model, table)
                self._written += len(group) - dropped
                self._dropped += dropped
                continue
            try:
                _write_segment(self.home, model, table)
            except (OSError, InvalidInput) as exc:
                log.warning("ops history: cannot write rows of %r (%s); kept for retry", model, exc)
                keep.extend(group)
            else:
                self._written += len(group)
        if keep:
            with self._lock:
                self._rows[:0] = keep
                self._oldest = time.monotonic()


def _write_segment(home: Path, model: str, table: Any) -> Path | str:
    import pyarrow.parquet as pq

    from modelloop._logroot import sink_for

    sink = sink_for(home)
    if sink is not None:
        dropped = sink.write("ops", model, table)
        if dropped:
            raise OSError(f"{dropped} ops history rows dropped: the log spool {sink.spool} is full")
        return sink.root.url_of(sink.root.folder("ops", model))
    folder = ops_folder(home, model)
    final = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_file(final) as fh:
        pq.write_table(table, fh)
    return final


def write_ops_history(home: str | os.PathLike[str], model: str, frame: pd.DataFrame) -> Path | str:
    """Append ``frame`` (a ``timestamp`` column or index, and any of :data:`OPS_COLUMNS`; the
    others are filled with NaN) as one history segment of ``model``: e.g. to replay a recorded
    or generated series. Returns the segment's path (on a URL log root: the model's folder
    there, the rows split into one segment per hour)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    data = frame.reset_index() if "timestamp" not in frame.columns else frame.copy()
    if "timestamp" not in data.columns or data.empty:
        raise InvalidInput("an ops history frame needs rows and a timestamp column or index")
    unknown = sorted(set(data.columns) - set(OPS_COLUMNS))
    if unknown:
        raise InvalidInput(f"unknown ops history columns {unknown}; known: {list(OPS_COLUMNS)}")
    data["timestamp"] = pd.to_datetime(data["timestamp"], utc=True).astype("datetime64[ms, UTC]")
    data["model"] = check_model_name(model)
    for column in OPS_COLUMNS:
        if column not in data.columns:
            data[column] = None if column == "replica" else np.nan
    table = pa.Table.from_pandas(data[list(OPS_COLUMNS)], preserve_index=False)
    return _write_segment(Path(home), model, table)


#: How the rows of several replicas in one interval combine into the service's row.
_SUMMED = ("requests", "errors_4xx", "errors_5xx", "rejected")
_WORST = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "queue_depth", "cpu_percent",
          "rss_bytes", "batch_size")  # fmt: skip


def combine_replicas(history: pd.DataFrame) -> pd.DataFrame:
    """One row per interval for the whole service from the rows of several replicas (told
    apart by ``replica``; rows without one count as one more replica): each replica's rows are
    put on one grid of the history's interval (its first row at the grid point nearest to it,
    its later rows whole intervals after), then combined — requests, errors and rejections
    summed, latencies, queue depth, CPU and RSS the largest (the worst replica's). A history of
    one replica comes back as it is."""
    import numpy as np
    import pandas as pd

    if "replica" not in history.columns or history.empty:
        return history
    keys = history["replica"].astype("object").where(history["replica"].notna(), "")
    if keys.nunique() <= 1:
        return history
    stamps = pd.DatetimeIndex(history["timestamp"]).as_unit("ms").asi8.astype(np.int64)
    if "interval_s" in history.columns and history["interval_s"].notna().any():
        step_ms = float(np.nanmedian(history["interval_s"].to_numpy(dtype=float))) * 1000
    else:
        per = [np.diff(np.sort(stamps[(keys == k).to_numpy()])) for k in keys.unique()]
        diffs = np.concatenate([np.zeros(0), *per])
        step_ms = float(np.median(diffs)) if len(diffs) else 1000.0
    step_ms = max(step_ms, 1.0)
    origin = int(stamps.min())
    slot = np.empty(len(history), dtype=np.int64)
    for key in keys.unique():
        rows = np.flatnonzero((keys == key).to_numpy())
        own = stamps[rows]
        first = int(own.min())
        slot[rows] = round((first - origin) / step_ms) + np.round((own - first) / step_ms).astype(
            np.int64
        )
    frame = history.assign(_slot=slot)
    grouped = frame.groupby("_slot", sort=True)
    out = pd.DataFrame(index=grouped.size().index)
    for column in history.columns:
        if column in _SUMMED:
            out[column] = grouped[column].sum(min_count=1)
        elif column in _WORST:
            out[column] = grouped[column].max()
        elif column not in ("timestamp", "interval_s", "replica"):
            out[column] = grouped[column].first()
    out["timestamp"] = pd.to_datetime(origin + out.index.to_numpy() * step_ms, unit="ms", utc=True)
    if "interval_s" in history.columns:
        out["interval_s"] = step_ms / 1000
    out["replica"] = None
    return out[list(history.columns)].reset_index(drop=True)


_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(since: str | datetime | float | None, now: datetime | None = None) -> Any:
    """A start time from ``30m``, ``2h``, ``7d`` (ago), an ISO date-time, a datetime or epoch
    seconds; None stays None. Returns a tz-aware UTC ``pandas.Timestamp``."""
    import pandas as pd

    if since is None:
        return None
    now = now or datetime.now(UTC)
    if isinstance(since, int | float) and not isinstance(since, bool):
        return pd.Timestamp(float(since), unit="s", tz="UTC")
    if isinstance(since, datetime):
        ts = pd.Timestamp(since)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if isinstance(since, str):
        m = _AGO.match(since.strip())
        if m:
            seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
            return pd.Timestamp(now - timedelta(seconds=seconds))
        try:
            ts = pd.Timestamp(since)
        except ValueError:
            ts = None
        if ts is not None and not pd.isna(ts):
            return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    raise InvalidInput(
        f"bad since {since!r}: use a duration ago (30m, 2h, 7d) or an ISO date-time "
        "(2026-01-31T12:00Z)"
    )


def read_ops_history(
    model: str,
    since: str | datetime | float | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    until: str | datetime | float | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The operational history of ``model`` as a DataFrame of :data:`OPS_COLUMNS`, one row per
    interval, sorted by ``timestamp``; ``since`` / ``until`` bound it (durations count back from
    now). ``home`` defaults to ``$MODELLOOP_HOME``; the history is read from its log root
    (``MODELLOOP_LOG_ROOT``), on a URL root only from the hours ``since`` / ``until`` cover.
    When several replicas serve the model and share the root, the history holds one row per
    replica per interval (their timestamps interleave). ``columns``: only these (and
    ``timestamp``), which reads faster. NotFound when the model has no history."""
    from modelloop._logroot import shared_root

    if home is None:
        from modelloop._config import Settings

        home = Settings.from_env().home
    shared = shared_root(home)
    if shared is not None:
        return _read_shared(shared, model, since, until, columns)
    folder = ops_folder(home, model)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise NotFound(
            f"model {model!r} has no operational history under {Path('ops') / model} of the "
            "home (modelloop serve records it while it serves the model)"
        )
    import pyarrow.parquet as pq

    wanted = _wanted(columns)
    tables = []
    for f in files:
        present = set(pq.read_schema(f).names)
        tables.append(pq.read_table(f, columns=[c for c in wanted if c in present]))
    return _frame(tables, wanted, parse_since(since), parse_since(until))


def _wanted(columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(OPS_COLUMNS)
    unknown = sorted(set(columns) - set(OPS_COLUMNS))
    if unknown:
        raise InvalidInput(f"unknown ops history columns {unknown}; known: {list(OPS_COLUMNS)}")
    return [c for c in OPS_COLUMNS if c == "timestamp" or c in columns]


def _schema() -> Any:
    import pyarrow as pa

    types = {
        "timestamp": pa.timestamp("ms", tz="UTC"),
        "model": pa.string(),
        "replica": pa.string(),
    }
    ints = {"requests", "errors_4xx", "errors_5xx", "rejected", "queue_depth", "rss_bytes"}
    return pa.schema(
        [(c, types.get(c, pa.int64() if c in ints else pa.float64())) for c in OPS_COLUMNS]
    )


def _read_shared(
    shared: Any,
    model: str,
    since: str | datetime | float | None,
    until: str | datetime | float | None,
    columns: Sequence[str] | None,
) -> pd.DataFrame:
    """:func:`read_ops_history` from a URL log root (a :class:`modelloop._logroot.SharedRoot`):
    lists and opens only the date and hour partitions that ``since`` / ``until`` overlap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_model_name(model)
    start, end = parse_since(since), parse_since(until)
    lo_ns = int(start.value) if start is not None else None
    hi_ns = int(end.value) + 1 if end is not None else None
    files = shared.files("ops", model, lo_ns, hi_ns)
    if not files and not shared.has("ops", model):
        raise NotFound(
            f"model {model!r} has no operational history under "
            f"{shared.url_of(shared.folder('ops', model))} (modelloop serve records it while "
            "it serves the model)"
        )
    wanted = _wanted(columns)

    def read(path: str) -> Any:
        try:
            with shared.open(path) as fh:
                data = pa.BufferReader(fh.read())
        except FileNotFoundError:  # removed since the listing (a retention job)
            return None
        present = set(pq.read_schema(data).names)
        return pq.read_table(data, columns=[c for c in wanted if c in present])

    try:
        if len(files) > 4:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(8) as pool:
                read_back = list(pool.map(read, files))
        else:
            read_back = [read(f) for f in files]
    except OSError as exc:
        raise shared.unreachable(exc) from exc
    tables = [t for t in read_back if t is not None]
    if not tables:
        tables = [_schema().empty_table().select(wanted)]
    return _frame(tables, wanted, start, end)


def _frame(tables: list[Any], wanted: list[str], start: Any, end: Any) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    order = [c for c in wanted if c in frame.columns]
    if list(frame.columns) != order:
        frame = frame[order]
    stamps = frame["timestamp"]
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        frame["timestamp"] = stamps.dt.tz_convert("UTC")
    else:
        frame["timestamp"] = pd.to_datetime(stamps, utc=True)
    filtered = False
    if start is not None:
        frame, filtered = frame[frame["timestamp"] >= start], True
    if end is not None:
        frame, filtered = frame[frame["timestamp"] <= end], True
    if not frame["timestamp"].is_monotonic_increasing:  # replicas' rows interleave
        frame, filtered = frame.sort_values("timestamp", kind="stable"), True
    return frame.reset_index(drop=True) if filtered else frame
