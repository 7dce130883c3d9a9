"""Turning one column of any supported container into numbers or category counts, fast.

Supported containers: pandas Series, pyarrow Array / ChunkedArray, numpy arrays and Python
sequences. Tables (pandas DataFrame, pyarrow Table / RecordBatch, a mapping of columns) are read
column by column with :func:`get_column`. Nothing here loops over rows in Python.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput, SchemaMismatch

__all__ = [
    "column_names",
    "count_categories",
    "decode_array",
    "distinct_share",
    "encode_array",
    "get_column",
    "is_datetime_column",
    "is_integer_column",
    "is_numeric_column",
    "num_rows",
    "to_epoch_ns",
    "to_float_array",
]


def _is_arrow(obj: Any) -> bool:
    return type(obj).__module__.startswith("pyarrow")


def column_names(table: Any) -> list[str]:
    """The column names of a DataFrame, pyarrow Table / RecordBatch or mapping of columns."""
    if hasattr(table, "columns") and not _is_arrow(table):  # pandas
        return [str(c) for c in table.columns]
    if _is_arrow(table) and hasattr(table, "schema"):
        return list(table.schema.names)
    if isinstance(table, Mapping):
        return [str(k) for k in table]
    raise InvalidInput(
        f"expected a pandas DataFrame, a pyarrow Table or RecordBatch, or a mapping of columns; "
        f"got {type(table).__name__}"
    )


def num_rows(table: Any) -> int:
    """Number of rows of a supported table."""
    if _is_arrow(table):
        return int(table.num_rows)
    if hasattr(table, "columns"):
        return len(table)
    if isinstance(table, Mapping):
        return len(next(iter(table.values()))) if table else 0
    raise InvalidInput(f"cannot count the rows of {type(table).__name__}")


def get_column(table: Any, name: str) -> Any:
    """One column of a supported table; ``SchemaMismatch`` naming the column if it is absent."""
    if name not in column_names(table):
        raise SchemaMismatch(f"column {name!r} is missing from the data", column=name)
    if _is_arrow(table):
        return table.column(name)
    return table[name]


def is_numeric_column(values: Any) -> bool:
    """True for integer and floating columns (bool and decimal-free numbers), else categorical."""
    if _is_arrow(values):
        import pyarrow.types as pat

        t = values.type
        return bool(pat.is_integer(t) or pat.is_floating(t))
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        dtype = np.asarray(values).dtype
    kind = getattr(dtype, "kind", "O")
    return kind in "iuf"


def is_integer_column(values: Any) -> bool:
    """True for integer columns (candidates for identifiers)."""
    if _is_arrow(values):
        import pyarrow.types as pat

        return bool(pat.is_integer(values.type))
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        dtype = np.asarray(values).dtype
    return getattr(dtype, "kind", "O") in "iu"


def is_datetime_column(values: Any) -> bool:
    """True for timestamp and date columns (pandas, numpy datetime64, pyarrow timestamp/date)."""
    if _is_arrow(values):
        import pyarrow.types as pat

        t = values.type
        return bool(pat.is_timestamp(t) or pat.is_date(t))
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        if isinstance(values, list | tuple) and values:
            import datetime as dt

            return all(isinstance(v, dt.date) or v is None for v in values) and any(
                v is not None for v in values
            )
        dtype = np.asarray(values).dtype
    return getattr(dtype, "kind", "O") == "M"


def to_epoch_ns(values: Any, column: str = "") -> tuple[np.ndarray, int]:
    """Present datetimes as int64 nanoseconds since the epoch (naive values read as UTC), and the
    number of missing ones. ``SchemaMismatch`` if the column holds no datetimes."""
    import pandas as pd

    try:
        if _is_arrow(values):
            values = values.to_pandas()
        stamps = pd.to_datetime(pd.Series(values), utc=True)
    except (TypeError, ValueError) as exc:
        raise SchemaMismatch(f"column {column!r} is not a datetime: {exc}", column=column) from exc
    present = stamps.notna().to_numpy()
    ns = stamps.dt.as_unit("ns").array.asi8  # whatever unit the data came in
    return np.asarray(ns[present], dtype=np.int64), int((~present).sum())


def distinct_share(values: Any) -> tuple[float, int]:
    """The share of distinct values among the present ones, and the number present."""
    import pandas as pd

    if _is_arrow(values):
        import pyarrow.compute as pc

        present = len(values) - values.null_count
        return (len(pc.unique(values.drop_null())) / present if present else 0.0), present
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    present = int(s.notna().sum())
    return (s.nunique(dropna=True) / present if present else 0.0), present


def to_float_array(values: Any, column: str = "") -> np.ndarray:
    """The column as float64; missing values become NaN. ``SchemaMismatch`` if not numeric."""
    try:
        if _is_arrow(values):
            import pyarrow as pa

            arr = values.cast(pa.float64())
            if isinstance(arr, pa.ChunkedArray):
                if arr.num_chunks == 1:
                    return arr.chunk(0).to_numpy(zero_copy_only=False)
                return arr.to_numpy()
            return arr.to_numpy(zero_copy_only=False)
        if hasattr(values, "to_numpy"):  # pandas, including nullable dtypes
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SchemaMismatch(f"column {column!r} is not numeric: {exc}", column=column) from exc
    except Exception as exc:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError
        if type(exc).__module__.startswith("pyarrow"):
            raise SchemaMismatch(f"column {column!r} is not numeric: {exc}", column=column) from exc
        raise


def _arrow_counts(arr: Any) -> tuple[dict[str, int], int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out: dict[str, int] = {}
    missing = 0
    for chunk in chunks:
        missing += chunk.null_count
        if pa.types.is_dictionary(chunk.type):
            # bincount on the indices: no decoding of the strings at all.
            idx = chunk.indices.to_numpy(zero_copy_only=False)
            if chunk.null_count:
                idx = idx[chunk.is_valid().to_numpy(zero_copy_only=False)]
            counts = np.bincount(idx.astype(np.int64), minlength=len(chunk.dictionary))
            labels = chunk.dictionary.to_pylist()
            pairs = zip(labels, counts.tolist(), strict=True)
        else:
            vc = pc.value_counts(chunk)
            pairs = zip(vc.field(0).to_pylist(), vc.field(1).to_pylist(), strict=True)
        for label, n in pairs:
            if label is None or n == 0:
                continue
            key = str(label)
            out[key] = out.get(key, 0) + int(n)
    return out, missing


def count_categories(values: Any) -> tuple[dict[str, int], int]:
    """Counts per category (labels as ``str``) and the number of missing values."""
    import pandas as pd

    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        valid = codes >= 0
        counts = np.bincount(codes[valid], minlength=len(values.cat.categories))
        labels = [str(c) for c in values.cat.categories]
        return (
            {lab: int(n) for lab, n in zip(labels, counts.tolist(), strict=True) if n},
            int((~valid).sum()),
        )
    if not _is_arrow(values):
        import pyarrow as pa

        try:
            values = pa.array(values, from_pandas=True)
        except Exception:  # mixed Python objects pyarrow cannot type: fall back to strings
            values = pa.array(pd.Series(values).astype("string"), from_pandas=True)
    return _arrow_counts(values)


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A compact JSON-safe form of a 1-d array: little-endian bytes, byte-shuffled, zlib, base64.

    Byte shuffling groups the exponent bytes of neighbouring floats, which zlib then compresses.
    """
    a = np.ascontiguousarray(a)
    dt = a.dtype.newbyteorder("<")
    a = a.astype(dt, copy=False)
    shuffled = a.view(np.uint8).reshape(-1, dt.itemsize).T.tobytes()
    return {
        "dtype": dt.str,
        "length": len(a),
        "zlib_b64": base64.b64encode(zlib.compress(shuffled, 9)).decode("ascii"),
    }


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; the result is read-only."""
    try:
        dt = np.dtype(d["dtype"])
        raw = zlib.decompress(base64.b64decode(d["zlib_b64"]))
        n = int(d["length"])
        a = np.frombuffer(raw, dtype=np.uint8).reshape(dt.itemsize, n).T.copy().view(dt).ravel()
    except (KeyError, ValueError, TypeError, zlib.error) as exc:
        raise InvalidInput(f"malformed encoded array: {exc}") from exc
    a.flags.writeable = False
    return a
