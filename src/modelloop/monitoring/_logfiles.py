"""Writing the prediction log and feedback labels that monitoring reads.

Layout, one folder per model under ``$MODELLOOP_HOME``:

* ``predictions/<model>/<segment>.parquet`` — ``request_id`` (string), ``timestamp``
  (timestamp[ms, UTC]), ``model_name``, ``model_version`` (int), ``route`` (``champion``,
  ``canary``, ``shadow``), the input columns flat, ``prediction`` and ``proba_<class>``;
* ``feedback/<model>/<segment>.parquet`` — ``request_id``, ``label`` and ``timestamp``.

A segment is written to a temporary name and renamed, so readers never see half a file.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from modelloop._fs import atomic_file
from modelloop._names import PREDICTION_COLUMNS, check_model_name
from modelloop.exceptions import InvalidInput, SchemaMismatch

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["PREDICTION_COLUMNS", "append_feedback", "append_predictions"]


def _write(frame: pd.DataFrame | pa.Table, folder: Path, required: tuple[str, ...]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

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
    # Names sort by creation time, so "the latest segment wins" is well defined.
    final = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_file(final) as fh:
        pq.write_table(table, fh, row_group_size=65_536)
    return final


def log_folder(home: str | os.PathLike[str], kind: str, model: str) -> Path:
    """``<home>/<kind>/<model>``, the model name checked (it becomes a path component)."""
    return Path(home) / kind / check_model_name(model)


def append_predictions(
    home: str | os.PathLike[str], model: str, frame: pd.DataFrame | pa.Table
) -> Path:
    """Append one segment of logged predictions for ``model`` (a DataFrame, or an Arrow table
    whose ``timestamp`` is an Arrow timestamp); return its path."""
    folder = log_folder(home, "predictions", model)
    return _write(frame, folder, (*PREDICTION_COLUMNS, "prediction"))


def append_feedback(home: str | os.PathLike[str], model: str, frame: pd.DataFrame) -> Path:
    """Append ground-truth labels (``request_id``, ``label``) for ``model``'s predictions."""
    return _write(frame, log_folder(home, "feedback", model), ("request_id", "label"))
