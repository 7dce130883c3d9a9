"""Dataset snapshots: a content digest and a compact profile of a DataFrame."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from modelloop.exceptions import InvalidInput

__all__ = ["dataset_digest", "describe_frame"]


def dataset_digest(df: pd.DataFrame) -> str:
    """sha256 of a frame's column names, dtypes and values (the index is ignored).

    Equal content gives an equal digest across processes and machines; any changed value, column
    name, column order or dtype gives another.
    """
    h = hashlib.sha256()
    h.update(str(len(df)).encode())
    for name in df.columns:
        col = df[name]
        h.update(b"\x00col\x00" + str(name).encode() + b"\x00" + str(col.dtype).encode())
        try:
            hashed = pd.util.hash_pandas_object(col, index=False)
        except TypeError as exc:  # unhashable cells such as lists or dicts
            raise InvalidInput(f"column {name!r} cannot be snapshotted: {exc}") from None
        h.update(hashed.to_numpy().tobytes())
    return h.hexdigest()


def describe_frame(df: pd.DataFrame, *, top: int = 20) -> dict[str, Any]:
    """A JSON-safe profile: per column its dtype, missing rate and summary statistics."""
    columns: dict[str, Any] = {}
    n = len(df)
    for name in df.columns:
        col = df[name]
        info: dict[str, Any] = {
            "dtype": str(col.dtype),
            "missing_rate": float(col.isna().mean()) if n else 0.0,
        }
        if pd.api.types.is_bool_dtype(col):
            info["true_rate"] = float(col.dropna().astype(bool).mean()) if n else 0.0
        elif pd.api.types.is_numeric_dtype(col):
            values = col.dropna().to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            if values.size:
                q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
                info.update(
                    mean=float(values.mean()),
                    std=float(values.std()),
                    min=float(q[0]),
                    p25=float(q[1]),
                    median=float(q[2]),
                    p75=float(q[3]),
                    max=float(q[4]),
                )
        elif pd.api.types.is_datetime64_any_dtype(col):
            values = col.dropna()
            if len(values):
                info.update(min=str(values.min()), max=str(values.max()))
        else:
            counts = col.astype("string").value_counts(dropna=True)
            info["distinct"] = int(counts.size)
            info["top"] = {str(k): int(v) for k, v in counts.head(top).items()}
        columns[str(name)] = info
    return {"num_rows": n, "num_columns": len(df.columns), "columns": columns}
