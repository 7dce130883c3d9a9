"""Writing the prediction log and feedback labels that monitoring reads.

Layout, one folder per model under ``$MODELLOOP_HOME``:

* ``predictions/<model>/<segment>.parquet`` — ``request_id`` (string), ``timestamp``
  (timestamp[ms, UTC]), ``model_name``, ``model_version`` (int), ``route`` (``champion``,
  ``canary``, ``shadow``), the input columns flat, ``prediction`` and ``proba_<class>``;
* ``feedback/<model>/<segment>.parquet`` — ``request_id``, ``label`` and ``timestamp``.

A segment is written to a temporary name and renamed, so readers never see half a file.
With ``MODELLOOP_LOG_ROOT`` set to a URL the segments go to that shared root instead, in the
layout partitioned by hour that :mod:`modelloop._logroot` describes.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._fs import atomic_file
from modelloop._names import PREDICTION_COLUMNS, check_model_name
from modelloop.exceptions import InvalidInput, SchemaMismatch

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "PREDICTION_COLUMNS",
    "append_feedback",
    "append_predictions",
    "log_folder",
    "segment_files",
]


def _table(frame: pd.DataFrame | pa.Table, required: tuple[str, ...]) -> pa.Table:
    """The segment as an Arrow table with ``timestamp`` as timestamp[ms, UTC], its required
    columns checked."""
    import pyarrow as pa

    names = frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)
    for column in required:
        if column not in names:
            raise SchemaMismatch(f"log segment has no column {column!r}", column=column)
    if len(frame) == 0:
        raise InvalidInput("refusing to write an empty log segment")
    if isinstance(frame, pa.Table):
        table = frame
        if "timestamp" in names:
            i = names.index("timestamp")
            stamps = table.column(i).cast(pa.timestamp("ms", tz="UTC"))
            table = table.set_column(i, "timestamp", stamps)
    else:
        out = frame.copy()
        if "timestamp" in out.columns:
            import pandas as pd

            stamps = pd.to_datetime(out["timestamp"], utc=True)
            out["timestamp"] = stamps.astype("datetime64[ms, UTC]")
        table = pa.Table.from_pandas(out, preserve_index=False)
    return table


def _write(
    home: str | os.PathLike[str],
    kind: str,
    model: str,
    frame: pd.DataFrame | pa.Table,
    required: tuple[str, ...],
) -> Path | str:
    import pyarrow.parquet as pq

    from modelloop._logroot import log_root, sink_for

    table = _table(frame, required)
    sink = sink_for(home)
    if sink is not None:
        if "timestamp" not in table.column_names:
            import pyarrow as pa

            now = pa.array([time.time_ns() // 1_000_000] * len(table), pa.int64())
            table = table.append_column("timestamp", now.cast(pa.timestamp("ms", tz="UTC")))
        dropped = sink.write(kind, model, table)
        if dropped:
            raise OSError(f"{dropped} rows dropped: the log spool {sink.spool} is full")
        return sink.root.url_of(sink.root.folder(kind, model))
    folder = log_folder(log_root(home), kind, model)
    # Names sort by creation time, so "the latest segment wins" is well defined.
    final = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_file(final) as fh:
        pq.write_table(table, fh, row_group_size=65_536)
    return final


def log_folder(home: str | os.PathLike[str], kind: str, model: str) -> Path:
    """``<root>/<kind>/<model>`` under the log root of ``home`` (``MODELLOOP_LOG_ROOT`` when it
    is a folder, else ``home``), the model name checked (it becomes a path component). On a
    shared (URL) root, use :func:`segment_files`."""
    from modelloop._logroot import log_root

    root = log_root(home)
    return Path(home if isinstance(root, str) else root) / kind / check_model_name(model)


def segment_files(
    home: str | os.PathLike[str],
    kind: str,
    model: str,
    lo_ns: int | None = None,
    hi_ns: int | None = None,
) -> tuple[list[str], Any]:
    """The segments of ``kind`` (``predictions``, ``feedback``) for ``model`` under the log root
    of ``home``, sorted oldest first, and the fsspec file system to open them with (None for
    local files). On a shared root only the hours overlapping ``lo_ns <= t < hi_ns`` are
    listed; a local folder is listed whole."""
    from modelloop._logroot import shared_root

    shared = shared_root(home)
    if shared is not None:
        return shared.files(kind, model, lo_ns, hi_ns), shared.fs
    folder = log_folder(home, kind, model)
    if not folder.is_dir():
        return [], None
    return [str(p) for p in sorted(folder.glob("*.parquet")) if p.is_file()], None


def duckdb_paths(con: Any, home: str | os.PathLike[str], kind: str, model: str) -> list[str]:
    """:func:`segment_files` as paths DuckDB can read on ``con`` (a shared root's file system
    is registered on the connection, so its URLs go through fsspec)."""
    from modelloop._logroot import shared_root

    shared = shared_root(home)
    if shared is None:
        return segment_files(home, kind, model)[0]
    files = shared.files(kind, model)
    if files:
        register_filesystem(con, shared.fs)
    return [shared.url_of(f) for f in files]


def register_filesystem(con: Any, fs: Any) -> None:
    """Let DuckDB read ``fs``'s URLs through fsspec (idempotent per connection)."""
    try:
        con.register_filesystem(fs)
    except Exception as exc:  # already registered on this connection
        if "already" not in str(exc).lower():
            raise


def append_predictions(
    home: str | os.PathLike[str], model: str, frame: pd.DataFrame | pa.Table
) -> Path | str:
    """Append one segment of logged predictions for ``model`` (a DataFrame, or an Arrow table
    whose ``timestamp`` is an Arrow timestamp); return its path."""
    return _write(home, "predictions", model, frame, (*PREDICTION_COLUMNS, "prediction"))


def append_feedback(
    home: str | os.PathLike[str], model: str, frame: pd.DataFrame | pa.Table
) -> Path | str:
    """Append ground-truth labels (``request_id``, ``label``) for ``model``'s predictions.

    Both append functions write under the log root of ``home`` (``MODELLOOP_LOG_ROOT``); on a
    shared root they return the model's folder URL (the segment may still be in the spool)."""
    return _write(home, "feedback", model, frame, ("request_id", "label"))
