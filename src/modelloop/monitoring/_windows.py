"""Windows over a prediction log: Parquet segments read as a stream of record batches.

A prediction log is a folder of Parquet files (``<root>/predictions/<model>/*.parquet``) with at
least ``request_id``, ``timestamp`` (UTC), ``model_name``, ``model_version``, ``route``, the flat
input columns and ``prediction`` (``probabilities`` optional). Windows: the last N rows, the last T
(minutes, hours, ...), a calendar day or ISO week (UTC), or an explicit time range. Time windows are
filtered by pyarrow with pushdown on ``timestamp`` (row groups outside the range are skipped);
"last N rows" first finds the cut-off timestamp with DuckDB over the timestamp column alone. Only
one batch is in memory at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelloop.exceptions import InvalidInput, NotFound, SchemaMismatch

__all__ = [
    "CalendarWindow",
    "LastDuration",
    "LastRows",
    "PredictionLog",
    "TimeRange",
    "Window",
    "parse_window",
]

TIMESTAMP = "timestamp"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise InvalidInput(f"naive datetime {dt.isoformat()}: pass a timezone-aware (UTC) time")
    return dt.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return _utc(now) if now is not None else datetime.now(UTC)


@dataclass(frozen=True)
class TimeRange:
    """Rows with ``start <= timestamp < end``; None leaves that side open."""

    start: datetime | None = None
    end: datetime | None = None

    def resolve(self, now: datetime | None = None) -> TimeRange:
        return TimeRange(
            _utc(self.start) if self.start else None, _utc(self.end) if self.end else None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "range",
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


@dataclass(frozen=True)
class LastDuration:
    """Rows from ``now - duration`` on."""

    duration: timedelta

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise InvalidInput(f"window duration must be positive, got {self.duration}")

    def resolve(self, now: datetime | None = None) -> TimeRange:
        return TimeRange(_now(now) - self.duration, None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "last_duration", "seconds": self.duration.total_seconds()}


@dataclass(frozen=True)
class CalendarWindow:
    """A UTC calendar ``day`` or ISO ``week`` (Monday to Monday) containing ``now + offset`` units.

    ``offset=-1`` is yesterday / last week.
    """

    unit: str = "day"
    offset: int = 0

    def __post_init__(self) -> None:
        if self.unit not in ("day", "week"):
            raise InvalidInput(f"calendar window unit must be 'day' or 'week', got {self.unit!r}")

    def resolve(self, now: datetime | None = None) -> TimeRange:
        t = _now(now)
        day = datetime(t.year, t.month, t.day, tzinfo=UTC)
        if self.unit == "day":
            start = day + timedelta(days=self.offset)
            return TimeRange(start, start + timedelta(days=1))
        start = day - timedelta(days=day.weekday()) + timedelta(weeks=self.offset)
        return TimeRange(start, start + timedelta(weeks=1))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "calendar", "unit": self.unit, "offset": self.offset}


@dataclass(frozen=True)
class LastRows:
    """The ``n`` most recent rows by timestamp (ties at the cut-off taken in file order)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InvalidInput(f"a row window needs n >= 1, got {self.n}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "last_rows", "n": self.n}


Window = LastRows | LastDuration | CalendarWindow | TimeRange

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(spec: str) -> Window:
    """Parse a window spec: ``10000rows``, ``30m``, ``2h``, ``7d``, ``day``, ``week``, ``day-1``."""
    s = spec.strip().lower()
    if m := re.fullmatch(r"(\d+)\s*rows?", s):
        return LastRows(int(m.group(1)))
    if m := _DURATION.fullmatch(s):
        return LastDuration(timedelta(**{_UNITS[m.group(2)]: float(m.group(1))}))
    if m := re.fullmatch(r"(day|week)([+-]\d+)?", s):
        return CalendarWindow(m.group(1), int(m.group(2) or 0))
    raise InvalidInput(
        f"bad window {spec!r}: use e.g. '10000rows', '30m', '2h', '7d', 'day', 'week', 'day-1'"
    )


class PredictionLog:
    """A folder of Parquet prediction segments, read window by window as record batches.

    On a shared log root (``MODELLOOP_LOG_ROOT=s3://...``) the segments are partitioned by date
    and hour, and a time window lists and opens only the hours it overlaps.
    """

    def __init__(self, path: str | Path, *, shared: Any = None, model: str | None = None) -> None:
        self.shared = shared  # a modelloop._logroot.SharedRoot, or None for a local folder
        self.model = model
        self.path: Path | str = path if shared is not None else Path(path)
        self._only: list[Any] | None = None  # the files of one window (see within)

    @classmethod
    def for_model(cls, root: str | Path, model: str) -> PredictionLog:
        """The log of ``model`` under the log root of ``root`` (``MODELLOOP_LOG_ROOT`` when set,
        else ``<root>/predictions/<model>``)."""
        from modelloop._logroot import shared_root
        from modelloop.monitoring._logfiles import log_folder

        shared = shared_root(root)
        if shared is not None:
            folder = shared.url_of(shared.folder("predictions", model))
            return cls(folder, shared=shared, model=model)
        return cls(log_folder(root, "predictions", model))

    def within(self, window: Window | str, now: datetime | None = None) -> PredictionLog:
        """This log restricted to the segments that may hold rows of ``window`` (a time
        window on a shared root; otherwise the log itself)."""
        if isinstance(window, str):
            window = parse_window(window)
        if self.shared is None:
            return self
        if isinstance(window, LastRows):
            narrowed = PredictionLog(self.path, shared=self.shared, model=self.model)
            narrowed._only = self._newest(window.n)
            return narrowed
        rng = window.resolve(now)
        narrowed = PredictionLog(self.path, shared=self.shared, model=self.model)
        narrowed._only = self._list(
            _ns(rng.start) if rng.start else None, _ns(rng.end) if rng.end else None
        )
        return narrowed

    def _newest(self, n: int) -> list[Any]:
        """The segments of the newest hours that together hold at least ``n`` rows (every row
        of an hour partition is newer than every row of the hours before it)."""
        import pyarrow.parquet as pq

        files = self._list()
        hours: dict[str, list[Any]] = {}
        for f in files:
            hours.setdefault(str(f).rsplit("/", 1)[0], []).append(f)
        taken: list[Any] = []
        rows = 0
        for hour in sorted(hours, reverse=True):
            for f in hours[hour]:
                with self._source(f) as fh:
                    rows += pq.ParquetFile(fh).metadata.num_rows
            taken[:0] = hours[hour]
            if rows >= n:
                break
        return taken

    def _list(self, lo_ns: int | None = None, hi_ns: int | None = None) -> list[Any]:
        assert self.shared is not None and self.model is not None
        return list(self.shared.files("predictions", self.model, lo_ns, hi_ns))

    def files(self) -> list[Any]:
        """The segments (local paths; file-system paths on a shared root), oldest first."""
        if self._only is not None:
            return list(self._only)
        if self.shared is not None:
            return self._list()
        assert isinstance(self.path, Path)
        if not self.path.is_dir():
            raise NotFound(f"no prediction log at {self.path}")
        return sorted(p for p in self.path.glob("*.parquet") if p.is_file())

    def _source(self, f: Any) -> Any:
        """What pyarrow opens for segment ``f``."""
        return self.shared.open(f) if self.shared is not None else f

    def duckdb_files(self, con: Any) -> list[str]:
        """The segments as paths DuckDB reads on ``con`` (a shared root's file system is
        registered on it)."""
        files = self.files()
        if self.shared is None:
            return [str(f) for f in files]
        from modelloop.monitoring._logfiles import register_filesystem

        register_filesystem(con, self.shared.fs)
        return [self.shared.url_of(f) for f in files]

    def _read_schema(self, f: Any) -> Any:
        import pyarrow.parquet as pq

        if self.shared is None:
            return pq.read_schema(f)
        try:
            with self._source(f) as fh:
                return pq.read_schema(fh)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.shared.unreachable(exc) from exc

    def schema(self, dictionary_columns: Iterable[str] = ()) -> Any:
        """The unified pyarrow schema of all segments (None when the log is empty)."""
        import pyarrow as pa

        files = self.files()
        if not files and self._only is not None:
            # a window without segments on a shared root: the columns of the newest segment,
            # so that an empty window reads as it does on a local log
            files = self._list()[-1:]
        if not files:
            return None
        try:
            # A pandas category column is stored dictionary-encoded; another segment may hold the
            # same column as plain strings. Unify the value types, and let permissive promotion
            # widen int64 to float64 and ms to ns, so that one odd segment cannot block the log.
            schema = pa.unify_schemas(
                [_decoded(self._read_schema(f)) for f in files], promote_options="permissive"
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise SchemaMismatch(f"prediction segments in {self.path} disagree: {exc}") from exc
        if TIMESTAMP not in schema.names or not pa.types.is_timestamp(schema.field(TIMESTAMP).type):
            raise SchemaMismatch(
                f"prediction log {self.path} has no timestamp column of type timestamp",
                column=TIMESTAMP,
            )
        for c in dictionary_columns:
            if c in schema.names:
                f = schema.field(c)
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                    i = schema.get_field_index(c)
                    schema = schema.set(i, f.with_type(pa.dictionary(pa.int32(), f.type)))
        return schema

    def batches(
        self,
        window: Window | str,
        columns: Iterable[str] | None = None,
        *,
        now: datetime | None = None,
        batch_size: int = 65_536,
        dictionary_columns: Iterable[str] = (),
    ) -> Iterator[Any]:
        """Stream the window as pyarrow RecordBatches (only ``columns`` when given).

        ``dictionary_columns`` are read dictionary-encoded, which makes counting categories cheap.
        Segments are read row group by row group, pulled by the caller (no read-ahead), and row
        groups whose timestamp statistics fall outside the window are skipped unread.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(window, str):
            window = parse_window(window)
        if self.shared is not None and self._only is None:
            yield from self.within(window, now).batches(
                window,
                columns,
                now=now,
                batch_size=batch_size,
                dictionary_columns=dictionary_columns,
            )
            return
        dict_cols = list(dictionary_columns)
        schema = self.schema(dict_cols)
        if schema is None:
            return
        names = list(columns) if columns is not None else list(schema.names)
        unknown = [c for c in names if c not in schema.names]
        if unknown:
            raise SchemaMismatch(f"prediction log has no column {unknown[0]!r}", column=unknown[0])
        read_cols = names if TIMESTAMP in names else [*names, TIMESTAMP]
        target = _project(schema, read_cols)
        ts_type = schema.field(TIMESTAMP).type
        budget = cutoff = None
        lo_ns = hi_ns = None  # bounds in integer nanoseconds since the epoch: exact comparisons
        if isinstance(window, LastRows):
            cut = self._cutoff(window.n, ts_type.unit)
            if cut is not None:
                cut_ns, n_after = cut
                lo_ns = cut_ns
                cutoff = pa.scalar(_to_unit(cut_ns, ts_type.unit), type=ts_type)
                budget = window.n - n_after  # rows exactly at the cut-off still to take
        else:
            rng = window.resolve(now)
            lo_ns = _ns(rng.start) if rng.start else None
            hi_ns = _ns(rng.end) if rng.end else None
        for batch in self._scan(lo_ns, hi_ns, read_cols, target, dict_cols, batch_size):
            if budget is not None and cutoff is not None:
                at = pc.equal(batch.column(TIMESTAMP), cutoff)
                n_at = pc.sum(at).as_py() or 0
                if n_at > budget:
                    # keep the first `budget` rows at the cut-off, in file order
                    rank = pc.cumulative_sum(pc.cast(at, "int64"))
                    batch = batch.filter(pc.or_(pc.invert(at), pc.less_equal(rank, budget)))
                    n_at = budget
                budget -= n_at
            if TIMESTAMP not in names:
                batch = batch.select(names)
            if batch.num_rows:
                yield batch

    def _scan(
        self,
        lo_ns: int | None,
        hi_ns: int | None,
        read_cols: list[str],
        target: Any,
        dict_cols: list[str],
        size: int,
    ) -> Iterator[Any]:
        """Rows with ``lo_ns <= timestamp < hi_ns`` (None: open), cast to the ``target`` schema."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for path in self.files():
            source = self._source(path)
            names = pq.read_schema(source).names
            # pyarrow's dataset scanner reads ahead and held >1 GB on a 10M-row log; pulling
            # row group by row group keeps one row group and one batch in memory.
            pf = pq.ParquetFile(
                source,
                read_dictionary=[c for c in dict_cols if c in names],
                pre_buffer=False,
                buffer_size=1 << 20,
            )
            present = [c for c in read_cols if c in pf.schema_arrow.names]
            ts_type = pf.schema_arrow.field(TIMESTAMP).type
            # bounds in this segment's own unit, rounded up: ts >= x and ts < x hold for an
            # integer ts exactly when they hold against ceil(x)
            lo = _to_unit(lo_ns, ts_type.unit) if lo_ns is not None else None
            hi = _to_unit(hi_ns, ts_type.unit) if hi_ns is not None else None
            if (lo is not None and lo > _INT64_MAX) or (hi is not None and hi <= _INT64_MIN):
                continue  # the window lies beyond what this segment's unit can hold
            lo = lo if lo is not None and lo > _INT64_MIN else None
            hi = hi if hi is not None and hi <= _INT64_MAX else None
            leaf, unit = _timestamp_leaf(pf)
            for rg in range(pf.num_row_groups):
                if not _overlaps_ns(pf.metadata.row_group(rg), leaf, unit, lo_ns, hi_ns):
                    continue
                for batch in pf.iter_batches(batch_size=size, row_groups=[rg], columns=present):
                    ts = batch.column(TIMESTAMP)
                    mask = None
                    if lo is not None:
                        mask = pc.greater_equal(ts, pa.scalar(lo, type=ts_type))
                    if hi is not None:
                        m2 = pc.less(ts, pa.scalar(hi, type=ts_type))
                        mask = m2 if mask is None else pc.and_(mask, m2)
                    if mask is not None:
                        batch = batch.filter(mask)
                    if batch.num_rows == 0:
                        continue
                    arrays = []
                    for field in target:
                        if field.name in present:
                            col = batch.column(field.name)
                            arrays.append(_cast(col, field, path))
                        else:  # a column this older segment does not have
                            arrays.append(pa.nulls(batch.num_rows, field.type))
                    yield pa.RecordBatch.from_arrays(arrays, schema=target)

    def _cutoff(self, n: int, unit: str) -> tuple[int, int] | None:
        """(timestamp of the n-th newest row in epoch ns, rows strictly newer), or None if the
        log has <= n rows. Exact at ``unit``, the unit of the log's unified timestamp column.
        """
        import duckdb

        # epoch_us would truncate ns timestamps (and DuckDB has none for TIMESTAMPTZ_NS);
        # epoch_ns overflows past 2262, so it is only used where the data is in ns anyway.
        fn, per = ("epoch_ns", 1) if unit == "ns" else ("epoch_us", 1_000)
        con = duckdb.connect()
        try:
            files = self.duckdb_files(con)
            src = "read_parquet($files, union_by_name = true, hive_partitioning = false)"
            row = con.execute(
                f"SELECT {fn}({TIMESTAMP}) FROM {src} ORDER BY {TIMESTAMP} DESC "
                f"LIMIT 1 OFFSET $off",
                {"files": files, "off": n - 1},
            ).fetchone()
            if row is None:
                return None
            cut = int(row[0])
            newer = con.execute(
                f"SELECT count(*) FROM {src} WHERE {fn}({TIMESTAMP}) > $cut",
                {"files": files, "cut": cut},
            ).fetchone()
        except duckdb.Error as exc:
            raise SchemaMismatch(f"cannot read prediction log {self.path}: {exc}") from exc
        finally:
            con.close()
        assert newer is not None
        return cut * per, int(newer[0])

    def read(self, window: Window | str, columns: Iterable[str] | None = None, **kw: Any) -> Any:
        """The whole window as a pandas DataFrame — for windows known to be small."""
        import pyarrow as pa

        batches = list(self.batches(window, columns, **kw))
        if not batches:
            schema = self.schema()
            if schema is None:
                import pandas as pd

                return pd.DataFrame(columns=list(columns or []))
            names = list(columns) if columns is not None else schema.names
            return pa.schema([schema.field(c) for c in names]).empty_table().to_pandas()
        return pa.Table.from_batches(batches).to_pandas()


def _project(schema: Any, names: list[str]) -> Any:
    import pyarrow as pa

    return pa.schema([schema.field(c) for c in names])


def _decoded(schema: Any) -> Any:
    """``schema`` with dictionary-encoded columns as their value type."""
    import pyarrow as pa

    for i, f in enumerate(schema):
        if pa.types.is_dictionary(f.type):
            schema = schema.set(i, f.with_type(f.type.value_type))
    return schema


def _cast(col: Any, field: Any, path: Any) -> Any:
    import pyarrow as pa

    if col.type == field.type:
        return col
    try:
        return col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(
            f"column {field.name!r} of segment {str(path).rsplit('/', 1)[-1]} ({col.type}) "
            f"cannot be read as {field.type}: {exc}",
            column=field.name,
        ) from exc


def _ns(dt: datetime) -> int:
    """Nanoseconds since the epoch, in integer arithmetic (a float is off by up to ~120 ns)."""
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1_000


def _to_unit(ns: int, unit: str) -> int:
    """``ns`` in ``unit``, rounded up."""
    return -(-ns // _NS_PER_UNIT[unit])


_UNITS_JSON = {"seconds": "s", "milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}


def _timestamp_leaf(pf: Any) -> tuple[int, str | None]:
    """(index of the timestamp column among the file's leaf columns, its stored unit)."""
    import json

    schema = pf.metadata.schema
    for i in range(len(schema)):
        col = schema.column(i)
        if col.path == TIMESTAMP:
            try:
                unit = json.loads(col.logical_type.to_json()).get("timeUnit")
            except (ValueError, AttributeError):
                unit = None
            return i, _UNITS_JSON.get(unit) if isinstance(unit, str) else None
    return -1, None


def _overlaps_ns(
    rg_meta: Any, leaf: int, unit: str | None, lo_ns: int | None, hi_ns: int | None
) -> bool:
    """False only when the row group's timestamp statistics (stored in ``unit``) prove it lies
    outside ``lo_ns <= t < hi_ns``."""
    if leaf < 0 or unit is None or (lo_ns is None and hi_ns is None):
        return True
    col = rg_meta.column(leaf)
    stats = col.statistics
    if stats is None or not stats.has_min_max or col.physical_type != "INT64":
        return True
    per = _NS_PER_UNIT[unit]
    lo, hi = int(stats.min_raw) * per, int(stats.max_raw) * per
    if lo_ns is not None and hi < lo_ns:
        return False
    return not (hi_ns is not None and lo >= hi_ns)
