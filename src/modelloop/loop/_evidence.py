"""Labelled evidence from the prediction log: served rows of a period joined with their feedback
labels, and what each route (champion, canary, shadow) got right or wrong.

The same reader gives the loop its training data (served rows only, with their labels) and the
judge its outcomes (every route, shadow included: a shadow row holds the challenger's answer to a
request the champion served, under the same request id, so it is labelled by the same feedback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import NotFound

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["RouteOutcomes", "labelled_rows", "route_outcomes"]


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _labels(home: Path, model: str, request_ids: Any) -> pd.DataFrame:
    """The latest label of each of ``request_ids`` (a later segment, or a later row within one,
    corrects an earlier label)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from modelloop.monitoring._logfiles import segment_files

    files, fs = segment_files(home, "feedback", model)
    wanted = pa.array(list(request_ids), pa.string())
    parts = []
    for order, f in enumerate(files):
        table = pq.read_table(f, columns=["request_id", "label"], filesystem=fs)
        ids = table.column("request_id").cast(pa.string())
        table = table.set_column(0, "request_id", ids).filter(pc.is_in(ids, value_set=wanted))
        if table.num_rows:
            frame = table.to_pandas()
            frame["_order"] = order * (1 << 32) + pd.RangeIndex(len(frame))
            parts.append(frame)
    if not parts:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "label": pd.Series(dtype=float)})
    labels = pd.concat(parts, ignore_index=True).sort_values("_order")
    return labels.drop_duplicates("request_id", keep="last").drop(columns="_order")


def labelled_rows(
    home: str | Path,
    model: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    routes: tuple[str, ...] | None = ("champion", "canary"),
) -> pd.DataFrame:
    """Logged rows of ``model`` with ``since_ms <= timestamp < until_ms`` on ``routes`` (all routes
    when None) that have a label, with the label in column ``label``. By default only the rows
    that were served (shadow copies left out), as training and gating want."""
    import pandas as pd

    from modelloop.monitoring._windows import PredictionLog, TimeRange

    home = Path(home)
    try:
        log = PredictionLog.for_model(home, model)
        served = log.read(TimeRange(_dt(since_ms), _dt(until_ms)))
    except NotFound:
        return pd.DataFrame(columns=["request_id", "route", "label"])
    if routes is not None and len(served):
        served = served[served["route"].isin(routes)]
    if not len(served):
        return served.assign(label=pd.Series(dtype=float))
    labels = _labels(home, model, served["request_id"].astype(str).unique())
    served = served.assign(request_id=served["request_id"].astype(str))
    return served.merge(labels, on="request_id", how="inner")


@dataclass(frozen=True)
class RouteOutcomes:
    """What one route answered in a period: labelled rows, wrong answers (classification) or
    per-row absolute errors (regression), and the versions that answered."""

    route: str
    labelled: int
    errors: int | None
    losses: np.ndarray | None
    versions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        mean = None
        if self.losses is not None and len(self.losses):
            mean = float(self.losses.mean())
        return {
            "route": self.route,
            "labelled": self.labelled,
            "errors": self.errors,
            "mean_loss": mean if mean is None or math.isfinite(mean) else None,
            "versions": list(self.versions),
        }


def _same(prediction: pd.Series, label: pd.Series) -> pd.Series:
    """Whether each prediction equals its label, numbers compared as numbers (1 == 1.0), and
    anything else as text, so a label of another type never silently matches."""
    import pandas as pd

    p_num = pd.to_numeric(prediction, errors="coerce")
    l_num = pd.to_numeric(label, errors="coerce")
    numeric = p_num.notna() & l_num.notna()
    as_text = prediction.astype(str) == label.astype(str)
    return (numeric & (p_num == l_num)) | (~numeric & as_text)


def route_outcomes(rows: pd.DataFrame, *, task: str) -> dict[str, RouteOutcomes]:
    """Per route, the outcomes of :func:`labelled_rows` (called with ``routes=None``).
    ``task`` is ``"classification"`` or ``"regression"``."""
    import numpy as np
    import pandas as pd

    out: dict[str, RouteOutcomes] = {}
    if not len(rows):
        return out
    for route, part in rows.groupby("route", sort=True):
        versions = tuple(sorted(int(v) for v in part["model_version"].dropna().unique()))
        if task == "regression":
            pred = pd.to_numeric(part["prediction"], errors="coerce").to_numpy(float)
            label = pd.to_numeric(part["label"], errors="coerce").to_numpy(float)
            ok = np.isfinite(pred) & np.isfinite(label)
            losses = np.abs(pred[ok] - label[ok])
            out[str(route)] = RouteOutcomes(str(route), int(ok.sum()), None, losses, versions)
        else:
            wrong = ~_same(part["prediction"], part["label"])
            out[str(route)] = RouteOutcomes(str(route), len(part), int(wrong.sum()), None, versions)
    return out
