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
    """A folder of Parquet prediction segments, read window by window as record batches."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_model(cls, root: str | Path, model: str) -> PredictionLog:
        """The log of ``model`` under ``<root>/predictions/<model>``."""
        from modelloop._names import check_model_name

        return cls(Path(root) / "predictions" / check_model_name(model))

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            raise NotFound(f"no prediction log at {self.path}")
        return sorted(p for p in self.path.glob("*.parquet") if p.is_file())

    def schema(self, dictionary_columns: Iterable[str] = ()) -> Any:
        """The unified pyarrow schema of all segments (None when the log is empty)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files()
        if not files:
            return None
        try:
            schema = pa.unify_schemas([pq.read_schema(f) for f in files])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
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
        import pyarrow.compute as pc

        if isinstance(window, str):
            window = parse_window(window)
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
        budget = cutoff = None
        if isinstance(window, LastRows):
            cut = self._cutoff(window.n)
            rng = TimeRange(None, None)
            if cut is not None:
                cutoff, n_after = cut
                rng = TimeRange(cutoff, None)
                budget = window.n - n_after  # rows exactly at the cut-off still to take
        else:
            rng = window.resolve(now)
        ts_type = schema.field(TIMESTAMP).type
        for batch in self._scan(rng, read_cols, target, dict_cols, batch_size):
            if budget is not None and cutoff is not None:
                at = pc.equal(batch.column(TIMESTAMP), _scalar(cutoff, ts_type))
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
        self, rng: TimeRange, read_cols: list[str], target: Any, dict_cols: list[str], size: int
    ) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ts_type = target.field(TIMESTAMP).type
        lo = _scalar(rng.start, ts_type) if rng.start else None
        hi = _scalar(rng.end, ts_type) if rng.end else None
        for path in self.files():
            # pyarrow's dataset scanner reads ahead and held >1 GB on a 10M-row log; pulling
            # row group by row group keeps one row group and one batch in memory.
            pf = pq.ParquetFile(
                path, read_dictionary=dict_cols, pre_buffer=False, buffer_size=1 << 20
            )
            present = [c for c in read_cols if c in pf.schema_arrow.names]
            ts_idx = pf.schema_arrow.get_field_index(TIMESTAMP)
            for rg in range(pf.num_row_groups):
                if not _overlaps(pf.metadata.row_group(rg), ts_idx, rng, ts_type):
                    continue
                for batch in pf.iter_batches(batch_size=size, row_groups=[rg], columns=present):
                    ts = batch.column(TIMESTAMP)
                    mask = None
                    if lo is not None:
                        mask = pc.greater_equal(ts, lo)
                    if hi is not None:
                        m2 = pc.less(ts, hi)
                        mask = m2 if mask is None else pc.and_(mask, m2)
                    if mask is not None:
                        batch = batch.filter(mask)
                    if batch.num_rows == 0:
                        continue
                    arrays = []
                    for field in target:
                        if field.name in present:
                            col = batch.column(field.name)
                            arrays.append(col if col.type == field.type else col.cast(field.type))
                        else:  # a column this older segment does not have
                            arrays.append(pa.nulls(batch.num_rows, field.type))
                    yield pa.RecordBatch.from_arrays(arrays, schema=target)

    def _cutoff(self, n: int) -> tuple[datetime, int] | None:
        """(timestamp of the n-th newest row, rows strictly newer), or None if the log has <= n."""
        import duckdb

        files = [str(f) for f in self.files()]
        con = duckdb.connect()
        try:
            src = "read_parquet($files, union_by_name = true)"
            row = con.execute(
                f"SELECT epoch_us({TIMESTAMP}) FROM {src} ORDER BY {TIMESTAMP} DESC "
                f"LIMIT 1 OFFSET $off",
                {"files": files, "off": n - 1},
            ).fetchone()
            if row is None:
                return None
            cut_us = int(row[0])
            newer = con.execute(
                f"SELECT count(*) FROM {src} WHERE epoch_us({TIMESTAMP}) > $cut",
                {"files": files, "cut": cut_us},
            ).fetchone()
        except duckdb.Error as exc:
            raise SchemaMismatch(f"cannot read prediction log {self.path}: {exc}") from exc
        finally:
            con.close()
        assert newer is not None
        return _EPOCH + timedelta(microseconds=cut_us), int(newer[0])

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


def _scalar(dt: datetime, ts_type: Any) -> Any:
    import pyarrow as pa

    return pa.scalar(dt, type=ts_type)


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _overlaps(rg_meta: Any, ts_idx: int, rng: TimeRange, ts_type: Any) -> bool:
    """False only when the row group's timestamp statistics prove it lies outside the range."""
    if ts_idx < 0 or (rng.start is None and rng.end is None):
        return True
    col = rg_meta.column(ts_idx)
    stats = col.statistics
    if stats is None or not stats.has_min_max or col.physical_type != "INT64":
        return True
    per_s = _PER_SECOND[ts_type.unit]
    lo, hi = int(stats.min_raw), int(stats.max_raw)
    # bounds widened by one unit so float rounding can never prune a row group that overlaps
    if rng.start is not None and hi < int(rng.start.timestamp() * per_s) - 1:
        return False
    return not (rng.end is not None and lo > int(rng.end.timestamp() * per_s) + 1)
