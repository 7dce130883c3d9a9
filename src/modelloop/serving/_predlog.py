"""The prediction log writer: rows buffered in memory, written as Parquet segments in batches.

Requests hand their rows to :meth:`PredictionLog.append`, which only queues them; a background
thread writes segments with :func:`~modelloop.monitoring._logfiles.append_predictions` (the
layout monitoring reads) when enough rows are pending, when the oldest has waited long enough,
and at :meth:`PredictionLog.close`. Logging never raises into, nor blocks, a prediction: a write
that fails is logged once per burst of failures, counted, and retried later; rows beyond
``max_pending_rows``, or beyond ``max_pending_bytes`` of (estimated) memory, are dropped and
counted, with a warning at the start of each burst of drops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._names import PREDICTION_COLUMNS, check_model_name
from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

    from modelloop._logroot import SegmentSink
    from modelloop.serving._metrics import ServingMetrics

__all__ = ["PredictionLog"]

_REQUIRED = (*PREDICTION_COLUMNS, "prediction")

logger = logging.getLogger(__name__)


class _Entry:
    """One append: rows of one model with one set of columns.

    A single row may come as ``names`` and a ``row`` tuple of plain values instead of
    ``columns``: a tuple of numbers and strings is invisible to the garbage collector and is
    transposed in one C call at write time, so a busy server's buffer costs almost nothing.
    """

    __slots__ = ("columns", "key", "model", "n", "row", "size", "t")

    def __init__(
        self,
        t: float,
        model: str,
        columns: dict[str, Any] | None,
        n: int,
        row: tuple[Any, ...] | None = None,
        key: frozenset[str] | None = None,
        size: int = 0,
    ) -> None:
        self.t = t  # time.monotonic() at append
        self.model = model
        self.columns = columns
        self.n = n
        self.row = row
        self.key = key if key is not None else frozenset(columns or ())
        self.size = size  # estimated bytes held

    def as_columns(self, names: tuple[str, ...]) -> dict[str, Any]:
        if self.columns is not None:
            return self.columns
        assert self.row is not None
        return {name: [value] for name, value in zip(names, self.row, strict=True)}


def _row_count(columns: Mapping[str, Any]) -> int:
    """Rows in an entry: the length of the first sequence value (1 if all are scalars)."""
    rid = columns.get("request_id")
    if rid is not None and not isinstance(rid, (str, bytes)):
        return len(rid)
    for value in columns.values():
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            continue
        return len(value)
    return 1


# Memory estimates: a number or a reference costs about this much; text adds its length.
_VALUE_BYTES = 32
_ENTRY_BYTES = 200


def _row_bytes(row: tuple[Any, ...]) -> int:
    """Estimated memory of a row tuple (a loop over the values: cheaper than sys.getsizeof)."""
    size = _ENTRY_BYTES + _VALUE_BYTES * len(row)
    for value in row:
        if type(value) is str:
            size += len(value)
    return size


def _columns_bytes(columns: Mapping[str, Any]) -> int:
    """Estimated memory of an entry's columns; the types in a long list are looked at in C
    first, so only lists that hold text are walked in Python."""
    size = _ENTRY_BYTES
    for value in columns.values():
        kind = type(value)
        if kind is list or kind is tuple:
            size += _VALUE_BYTES * (len(value) + 1)
            if len(value) == 1:
                if type(value[0]) is str:
                    size += len(value[0])
            elif str in set(map(type, value)):
                size += sum([len(v) for v in value if type(v) is str])
        elif kind is str or kind is bytes:
            size += _VALUE_BYTES + len(value)
        elif hasattr(value, "nbytes") and getattr(value.dtype, "kind", "O") != "O":
            size += _VALUE_BYTES + int(value.nbytes)
        elif hasattr(value, "__len__"):  # anything else, e.g. an object array: walk it
            size += _VALUE_BYTES * (len(value) + 1)
            size += sum([len(v) for v in value if isinstance(v, str)])
        else:
            size += _VALUE_BYTES
    return size


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bytes)) or not hasattr(value, "__len__")


#: The column names of row entries, by their (order-free) key, and the key of each name tuple.
_ROW_NAMES: dict[frozenset[str], tuple[str, ...]] = {}
_ROW_KEYS: dict[tuple[str, ...], frozenset[str]] = {}


def _ordered(given: Sequence[str]) -> list[str]:
    """The log's own columns first, in their order; the rest in the order given."""
    leading = [c for c in PREDICTION_COLUMNS if c in given]
    return leading + [c for c in given if c not in PREDICTION_COLUMNS]


def _table(entries: list[_Entry], wall_minus_mono: float) -> pa.Table:
    """One Arrow table from entries sharing a model and a column set; ValueError on bad rows."""
    import numpy as np

    first = entries[0]
    if all(e.row is not None for e in entries):  # rows of one column set: one transposition
        row_names = _ROW_NAMES[first.key]
        columns = zip(*(e.row for e in entries), strict=True)  # ValueError on a short row
        by_name = dict(zip(row_names, map(list, columns), strict=True))
        return _arrow({c: by_name[c] for c in _ordered(row_names)})
    given = list(_ROW_NAMES[first.key]) if first.columns is None else list(first.columns)
    names = _ordered(given)
    counts = [e.n for e in entries]
    total = sum(counts)
    maps = [e.as_columns(_ROW_NAMES.get(e.key, ())) for e in entries]
    data: dict[str, Any] = {}
    for name in names:
        pieces = list(map(itemgetter(name), maps))
        kinds = set(map(type, pieces))
        if kinds <= {list, tuple, np.ndarray}:  # the common case, done at C speed
            if np.ndarray in kinds:
                if any(type(p) is np.ndarray and p.ndim != 1 for p in pieces):
                    raise ValueError(f"column {name!r} holds an array that is not 1-D")
                pieces = [p.tolist() if type(p) is np.ndarray else p for p in pieces]
            if list(map(len, pieces)) != counts:
                raise ValueError(f"column {name!r} does not have one value per row")
            values: Any = list(chain.from_iterable(pieces))
        else:
            values = []
            extend = values.extend
            for entry, piece in zip(entries, pieces, strict=True):
                if _is_scalar(piece):
                    extend([piece] * entry.n)
                elif len(piece) != entry.n:
                    raise ValueError(f"column {name!r} does not have one value per row")
                else:
                    extend(piece.tolist() if isinstance(piece, np.ndarray) else piece)
        if len(values) != total:
            raise ValueError(f"column {name!r} has {len(values)} values for {total} rows")
        data[name] = values
    if "model_name" not in data:
        data["model_name"] = [first.model] * total
    if "timestamp" not in data:
        stamps: list[float] = []
        for entry in entries:
            stamps.extend([entry.t + wall_minus_mono] * entry.n)
        data["timestamp"] = stamps
    return _arrow(data)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) or (
        hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iuf"
    )


def _arrow(data: dict[str, list[Any]]) -> pa.Table:
    """The columns as an Arrow table, converted in C (no DataFrame: the writer shares the GIL
    with the server's event loop, and pandas would hold it several times longer)."""
    import pyarrow as pa

    arrays = {}
    for name, values in data.items():
        if name == "timestamp" and values and all(_is_number(v) for v in values):
            millis = pa.array([round(float(v) * 1000) for v in values], pa.int64())
            arrays[name] = millis.cast(pa.timestamp("ms", tz="UTC"))  # epoch seconds
        elif name == "timestamp":
            arrays[name] = pa.array(values).cast(pa.timestamp("ms", tz="UTC"), safe=False)
        elif name == "model_version":
            arrays[name] = pa.array([int(v) for v in values], pa.int64())
        elif name == "request_id":
            arrays[name] = pa.array([str(v) for v in values], pa.string())
        else:
            try:
                arrays[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as text
                arrays[name] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(arrays)


class PredictionLog:
    """Buffered, batched writer of ``<home>/predictions/<model>/<segment>.parquet``.

    ``append()`` takes ownership of the sequences it is given (do not change them afterwards).
    A segment holds at most about ``max_rows`` rows of one model and one column set.
    """

    def __init__(
        self,
        home: str | Path,
        *,
        max_rows: int = 10_000,
        max_delay_s: float = 2.0,
        max_pending_rows: int = 1_000_000,
        max_pending_bytes: int = 256 * 1024 * 1024,
        metrics: ServingMetrics | None = None,
        sink: SegmentSink | None = None,
    ) -> None:
        if max_rows < 1:
            raise InvalidInput(f"max_rows must be >= 1, got {max_rows}")
        if not max_delay_s > 0:
            raise InvalidInput(f"max_delay_s must be > 0, got {max_delay_s}")
        if max_pending_rows < max_rows:
            raise InvalidInput(
                f"max_pending_rows ({max_pending_rows}) must be >= max_rows ({max_rows})"
            )
        self.home = Path(home)
        self.max_rows = max_rows
        self.max_delay_s = float(max_delay_s)
        if max_pending_bytes < 1:
            raise InvalidInput(f"max_pending_bytes must be >= 1, got {max_pending_bytes}")
        self.max_pending_rows = max_pending_rows
        self.max_pending_bytes = max_pending_bytes
        self.metrics = metrics
        #: the shared log root's writer (``MODELLOOP_LOG_ROOT``); None: local segment files
        self.sink = sink
        if metrics is not None:
            metrics.log_bounds(max_pending_bytes)
        # After a failed write, the thread waits this long before trying again.
        self._retry_delay = min(max(self.max_delay_s, 0.1), 30.0)

        self._lock = threading.Lock()  # guards the buffer and counters below
        self._entries: list[_Entry] = []
        self._pending = 0  # rows appended, neither written nor dropped (incl. in flight)
        self._pending_bytes = 0  # their estimated memory
        self._inflight_rows = 0
        self._inflight_t: float | None = None
        self._written = 0
        self._dropped = 0
        self._errors = 0
        self._closed = False
        self._dropping = False

        self._flush_lock = threading.Lock()  # one flush at a time
        self._failing = 0  # failed attempts in the current failure burst
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the request path -------------------------------------------------------------------

    def append(self, model_name: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """Queue one request's (or one batch's) rows; never raises, never waits on I/O.

        ``columns``: ``request_id``, ``timestamp`` (epoch seconds; the append time if absent),
        ``model_name`` (``model_name`` if absent), ``model_version``, ``route``, the input
        columns, ``prediction``, ``proba_<class>``, ``latency_ms``. A scalar value stands for
        the same value in every row.
        """
        try:
            n = _row_count(columns)
            if n <= 0:
                return
            columns = dict(columns)
            entry = _Entry(time.monotonic(), model_name, columns, n, size=_columns_bytes(columns))
            self._queue(entry, model_name)
        except Exception:  # a malformed entry must not fail the prediction
            logger.exception("prediction log: could not queue rows of model %r", model_name)
            self._lost(1)

    def _queue(self, entry: _Entry, model_name: str) -> None:
        n = entry.n
        first_drop = wake = queued_ok = False
        with self._lock:
            if (
                self._closed
                or self._pending + n > self.max_pending_rows
                or self._pending_bytes + entry.size > self.max_pending_bytes
            ):
                self._dropped += n
                first_drop = not self._dropping
                self._dropping = True
            else:
                queued_ok = True
                self._entries.append(entry)
                self._pending += n
                self._pending_bytes += entry.size
                self._dropping = False
                queued = self._pending - self._inflight_rows
                wake = len(self._entries) == 1 or queued - n < self.max_rows <= queued
        if not queued_ok:
            if self.metrics is not None:
                self.metrics.log_dropped(n)
            if first_drop:
                if self._closed:
                    why = "log closed"
                elif self._pending + n > self.max_pending_rows:
                    why = f"{self._pending} rows pending; the limit is {self.max_pending_rows}"
                else:
                    why = (
                        f"about {self._pending_bytes} bytes pending; the limit is "
                        f"{self.max_pending_bytes} (modelloop serve --log-max-pending-bytes)"
                    )
                logger.warning(
                    "prediction log: dropping rows of model %r until it can write again (%s); "
                    "see modelloop_serving_prediction_log_dropped_rows",
                    model_name,
                    why,
                )
        elif wake:
            self._wake.set()

    def append_row(self, model_name: str, names: tuple[str, ...], row: tuple[Any, ...]) -> None:
        """Queue one row given as column ``names`` and a tuple of plain values (str, int,
        float, bool, None); the same contract as :meth:`append`, at a fraction of its cost.
        ``names`` must include ``timestamp`` and ``model_name``."""
        try:
            if len(names) != len(row):
                raise ValueError(f"row of {len(row)} values for {len(names)} columns")
            key = _ROW_KEYS.get(names)
            if key is None:
                if len(set(names)) != len(names):
                    raise ValueError(f"repeated column names in {names}")
                # names first: a thread that finds the key must find its names too
                _ROW_NAMES.setdefault(frozenset(names), names)
                key = _ROW_KEYS.setdefault(names, frozenset(names))
            if _ROW_NAMES[key] != names:  # same columns in another order: go the general way
                self.append(model_name, {n: [v] for n, v in zip(names, row, strict=True)})
                return
            entry = _Entry(time.monotonic(), model_name, None, 1, row, key, _row_bytes(row))
            self._queue(entry, model_name)
        except Exception:  # a malformed row must not fail the prediction
            logger.exception("prediction log: could not queue a row of model %r", model_name)
            self._lost(1)

    def _lost(self, rows: int) -> None:
        """Count rows that could not even be queued as dropped."""
        with self._lock:
            self._dropped += rows
        if self.metrics is not None:
            self.metrics.log_dropped(rows)

    # -- state -------------------------------------------------------------------------------

    @property
    def rows_written(self) -> int:
        """Rows written to segments so far."""
        return self._written

    @property
    def rows_dropped(self) -> int:
        """Rows that will never be written (buffer full, bad rows, closed, lost at close)."""
        return self._dropped

    @property
    def write_errors(self) -> int:
        """Failed segment writes (each is retried unless its rows are bad)."""
        return self._errors

    @property
    def pending_rows(self) -> int:
        """Rows appended and not yet written or dropped."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """Estimated memory held by the pending rows, in bytes."""
        return self._pending_bytes

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest pending row (0.0 when nothing is pending)."""
        with self._lock:
            oldest = self._inflight_t
            if oldest is None and self._entries:
                oldest = self._entries[0].t
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    # -- writing -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread that flushes on size and on time (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="modelloop-predlog", daemon=True)
        self._thread.start()

    def flush(self, *, full_segments_only: bool = False) -> None:
        """Write everything pending now; failures are logged, counted and kept for retry.

        With ``full_segments_only`` (a size-triggered flush), only whole segments of
        ``max_rows`` are written; the remainder waits for more rows or for its delay.
        """
        try:
            with self._flush_lock:
                self._flush(full_segments_only)
        except Exception:  # pragma: no cover - a bug here must not kill the thread
            logger.exception("prediction log: flush failed")

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and write what is pending; rows still unwritten count as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._flush_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._flush()
            except Exception:  # pragma: no cover
                logger.exception("prediction log: final flush failed")
            finally:
                self._flush_lock.release()
        with self._lock:
            lost = sum(e.n for e in self._entries)
            self._pending_bytes -= sum(e.size for e in self._entries)
            self._entries = []
            self._pending -= lost
            self._dropped += lost
        if lost:
            logger.error("prediction log: %d rows could not be written before shutdown", lost)
            if self.metrics is not None:
                self.metrics.log_dropped(lost)
        self._publish()

    def _run(self) -> None:
        while True:
            self._wake.clear()  # cleared before looking, so no wake-up is lost
            if self._stopping:
                return
            due, timeout = self._due()
            if due:
                self.flush(full_segments_only=due == "size")
            else:
                self._wake.wait(timeout)

    def _due(self) -> tuple[str, float | None]:
        """("time" | "size", 0) when a flush is due, else ("", seconds to wait or None)."""
        with self._lock:
            if not self._entries:
                return "", None
            queued = self._pending - self._inflight_rows
            oldest = self._entries[0].t
        now = time.monotonic()
        if now < self._retry_at:
            return "", self._retry_at - now
        if now - oldest >= self.max_delay_s:
            return "time", 0.0
        if queued >= self.max_rows:
            return "size", 0.0
        return "", oldest + self.max_delay_s - now

    def _flush(self, full_segments_only: bool = False) -> None:
        with self._lock:
            batch, self._entries = self._entries, []
            if full_segments_only:
                target = (self._pending - self._inflight_rows) // self.max_rows * self.max_rows
                taken = i = 0
                while i < len(batch) and taken < target:
                    taken += batch[i].n
                    i += 1
                batch, self._entries = batch[:i], batch[i:]
            if batch:
                self._inflight_t = batch[0].t
                self._inflight_rows = sum(e.n for e in batch)
        inflight_bytes = sum(e.size for e in batch)
        if not batch:
            self._publish()
            return
        groups: dict[tuple[str, frozenset[str]], list[_Entry]] = {}
        for entry in batch:
            groups.setdefault((entry.model, entry.key), []).append(entry)
        wall_minus_mono = time.time() - time.monotonic()
        keep: list[_Entry] = []
        written = dropped = 0
        transient: OSError | None = None
        bad: Exception | None = None
        for (model, _), entries in groups.items():
            try:
                check_model_name(model)
            except InvalidInput as exc:
                self._count_error()
                dropped += sum(e.n for e in entries)
                bad = exc
                continue
            chunks = self._chunks(entries)
            for i, chunk in enumerate(chunks):
                outcome = self._write(model, chunk, wall_minus_mono)
                written += outcome.written
                dropped += outcome.dropped
                keep.extend(outcome.keep)
                bad = outcome.bad or bad
                if outcome.transient is not None:  # keep the rest of this model for later
                    transient = outcome.transient
                    keep.extend(e for rest in chunks[i + 1 :] for e in rest)
                    break
        keep.sort(key=lambda e: e.t)
        with self._lock:
            self._pending -= written + dropped
            self._pending_bytes -= inflight_bytes - sum(e.size for e in keep)
            self._written += written
            self._dropped += dropped
            self._entries[:0] = keep
            self._inflight_t = None
            self._inflight_rows = 0
        if self.metrics is not None:
            if written:
                self.metrics.log_written(written)
            if dropped:
                self.metrics.log_dropped(dropped)
        if bad is not None:
            logger.error("prediction log: dropped %d malformed rows: %s", dropped, bad)
        if transient is not None:
            self._retry_at = time.monotonic() + self._retry_delay
            if not self._failing:
                logger.warning(
                    "prediction log: cannot write under %s (%s); %d rows kept for retry",
                    self.home / "predictions",
                    transient,
                    sum(e.n for e in keep),
                )
            self._failing += 1
        else:
            self._retry_at = 0.0
            if self._failing:
                logger.warning(
                    "prediction log: writing again after %d failed attempts", self._failing
                )
            self._failing = 0
        self._publish()

    def _chunks(self, entries: list[_Entry]) -> list[list[_Entry]]:
        chunks: list[list[_Entry]] = [[]]
        rows = 0
        for entry in entries:
            if rows and rows + entry.n > self.max_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(entry)
            rows += entry.n
        return chunks

    def _write(self, model: str, entries: list[_Entry], wall_minus_mono: float) -> _Outcome:
        """Write entries as one segment; bad rows are isolated by halving and dropped."""
        from modelloop.monitoring._logfiles import _table as segment_table
        from modelloop.monitoring._logfiles import append_predictions, log_folder

        rows = sum(e.n for e in entries)
        try:
            if self.sink is not None:  # a shared root: uploaded, or spooled while unreachable
                table = segment_table(_table(entries, wall_minus_mono), _REQUIRED)
                dropped = self.sink.write("predictions", model, table)
                if dropped:
                    self._count_error()
                return _Outcome(written=rows - dropped, dropped=dropped)
            # A folder that cannot be made fails here, before a table of every pending row is
            # built (and thrown away) on each retry.
            log_folder(self.home, "predictions", model).mkdir(parents=True, exist_ok=True)
            append_predictions(self.home, model, _table(entries, wall_minus_mono))
        except OSError as exc:
            self._count_error()
            return _Outcome(keep=entries, transient=exc)
        except Exception as exc:  # the rows themselves cannot be written: never retry them
            if len(entries) == 1:
                self._count_error()
                return _Outcome(dropped=rows, bad=exc)
            mid = len(entries) // 2
            left = self._write(model, entries[:mid], wall_minus_mono)
            if left.transient is not None:
                return _Outcome(
                    left.written, left.dropped, [*left.keep, *entries[mid:]], left.transient
                )
            right = self._write(model, entries[mid:], wall_minus_mono)
            return _Outcome(
                left.written + right.written,
                left.dropped + right.dropped,
                [*left.keep, *right.keep],
                right.transient,
                right.bad or left.bad,
            )
        return _Outcome(written=rows)

    def _count_error(self) -> None:
        with self._lock:
            self._errors += 1
        if self.metrics is not None:
            self.metrics.log_error()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.log_state(self._pending, self.lag_seconds, self._pending_bytes)


class _Outcome:
    __slots__ = ("bad", "dropped", "keep", "transient", "written")

    def __init__(
        self,
        written: int = 0,
        dropped: int = 0,
        keep: list[_Entry] | None = None,
        transient: OSError | None = None,
        bad: Exception | None = None,
    ) -> None:
        self.written = written
        self.dropped = dropped
        self.keep = keep or []
        self.transient = transient
        self.bad = bad
