"""Canonical column dtypes: naming a pandas column's dtype, and casting input values to it.

Every function raises :class:`~modelloop.exceptions.SchemaMismatch` naming the column, the row
(0-based position) and an example of the offending value, so a caller can fix its input.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import InvalidInput, SchemaMismatch

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "canonical_dtype",
    "cast_column",
    "check_dtype",
    "is_float",
    "is_nullable_dtype",
    "json_scalar",
]

_NP_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_NP_FLOATS = ("float32", "float64")
_MASKED_INTS = ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64")
_MASKED_FLOATS = ("Float32", "Float64")
_SIMPLE = frozenset(
    (
        *_NP_INTS,
        *_NP_FLOATS,
        *_MASKED_INTS,
        *_MASKED_FLOATS,
        "bool",
        "boolean",
        "string",
        "category",
    )
)
_DATETIME = re.compile(r"^datetime64\[(s|ms|us|ns)(?:, (.+))?\]$")
_MAX_LISTED = 20  # categories shown in an error message


def check_dtype(dtype: str) -> None:
    """Raise ``InvalidInput`` unless ``dtype`` is one of the canonical dtype names."""
    if not isinstance(dtype, str) or (dtype not in _SIMPLE and not _DATETIME.match(dtype)):
        raise InvalidInput(
            f"unknown column dtype {dtype!r}; expected one of {sorted(_SIMPLE)} or "
            "'datetime64[<unit>]' / 'datetime64[<unit>, <tz>]'"
        )


def is_nullable_dtype(dtype: str) -> bool:
    """Whether the dtype is a pandas masked dtype, whose users expect missing values."""
    return dtype in _MASKED_INTS or dtype in _MASKED_FLOATS or dtype == "boolean"


def is_float(dtype: str) -> bool:
    """Whether the dtype is a floating point dtype (NaN is its missing value)."""
    return dtype in _NP_FLOATS or dtype in _MASKED_FLOATS


def json_scalar(value: Any, what: str) -> str | int | float | bool:
    """``value`` as a plain JSON scalar (numpy scalars unwrapped); ``InvalidInput`` otherwise."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{what}: {value!r} cannot be stored as JSON")
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidInput(
        f"{what}: {value!r} ({type(value).__name__}) is not a str, int, float or bool"
    )


# -- naming the dtype of training data -------------------------------------------------------


def canonical_dtype(name: str, s: pd.Series) -> str:
    """The canonical dtype name of a training column; ``InvalidInput`` if it is unsupported."""
    import pandas as pd

    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if isinstance(dt, pd.StringDtype):
        return "string"
    if isinstance(dt, pd.DatetimeTZDtype):
        return f"datetime64[{dt.unit}, {dt.tz}]"
    if isinstance(dt, np.dtype) and dt.kind == "M":
        unit = np.datetime_data(dt)[0]
        if unit in ("s", "ms", "us", "ns"):
            return f"datetime64[{unit}]"
    if isinstance(dt, pd.api.extensions.ExtensionDtype) and dt.name in _SIMPLE:
        return dt.name  # Int64, UInt8, Float32, boolean ...
    if isinstance(dt, np.dtype) and dt.name in _SIMPLE:
        return dt.name
    if isinstance(dt, np.dtype) and dt.kind == "O":
        kind = pd.api.types.infer_dtype(s, skipna=True)
        has_missing = bool(s.isna().any())
        by_kind = {
            "string": "string",
            "empty": "string",
            "boolean": "boolean" if has_missing else "bool",
            "integer": "Int64" if has_missing else "int64",
            "integer-na": "float64",
            "floating": "float64",
            "mixed-integer-float": "float64",
        }
        if kind in by_kind:
            return by_kind[kind]
        raise InvalidInput(
            f"column {name!r} holds mixed Python objects ({kind}); convert it to one dtype "
            "(string, number, boolean, category or datetime) before training"
        )
    raise InvalidInput(f"column {name!r} has dtype {dt}, which a model signature does not support")


# -- casting input values to a canonical dtype -----------------------------------------------


def cast_column(
    s: pd.Series, name: str, dtype: str, *, nullable: bool, categories: Any
) -> pd.Series:
    """``s`` cast to ``dtype``; ``SchemaMismatch`` naming the column, row and value if it cannot be.

    ``nullable`` allows missing values (None, NaN, pd.NA, NaT). Infinite floats are never allowed.
    ``categories`` lists the allowed values of a ``category`` column, or of a ``string`` column
    that refuses unseen values (None: any string).
    """
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):  # compare the values, not the codes
        s = pd.Series(np.asarray(s, dtype=object), index=s.index, dtype=object)
    missing = s.isna().to_numpy(dtype=bool)
    if dtype in _NP_INTS or dtype in _MASKED_INTS or is_float(dtype):
        out = _cast_numeric(s, name, dtype, missing)
    elif dtype in ("bool", "boolean"):
        _require_types(s, name, dtype, missing, (bool, np.bool_), "a boolean")
        out = s
    elif dtype == "string":
        _require_types(s, name, dtype, missing, (str,), "a string")
        out = s if categories is None else _cast_category(s, name, missing, categories)
    elif dtype == "category":
        out = _cast_category(s, name, missing, categories)
    else:
        out = _cast_datetime(s, name, dtype, missing)
    if missing.any() and not nullable:
        row = int(np.flatnonzero(missing)[0])
        raise SchemaMismatch(
            f"column {name!r}: row {row}: missing value not allowed; the "
            "model was trained without missing values in this column",
            column=name,
        )
    return _finish(out, name, dtype, missing, categories)


def _show(value: Any) -> str:
    """A value as a user wrote it: ``1.5`` rather than ``np.float64(1.5)``."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _mismatch(name: str, row: int, value: Any, expected: str, why: str = "") -> SchemaMismatch:
    detail = why or f"got {_show(value)} ({type(value).__name__})"
    return SchemaMismatch(f"column {name!r}: row {row}: expected {expected}, {detail}", column=name)


def _require_types(
    s: pd.Series, name: str, dtype: str, missing: np.ndarray, types: tuple[type, ...], what: str
) -> None:
    """Every present value must be an instance of ``types`` (bools never count as numbers)."""
    values = s.to_numpy(dtype=object)
    for row in np.flatnonzero(~missing):
        v = values[row]
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool | np.bool_)):
            raise _mismatch(name, int(row), v, f"{what} ({dtype})")


def _cast_numeric(s: pd.Series, name: str, dtype: str, missing: np.ndarray) -> pd.Series:
    import pandas as pd

    kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else getattr(s.dtype, "kind", "O")
    if kind == "b":
        row = int(np.flatnonzero(~missing)[0]) if (~missing).any() else 0
        raise _mismatch(name, row, s.iloc[row], f"a number ({dtype})")
    if kind not in "iuf":
        _require_types(s, name, dtype, missing, (int, float, np.integer, np.floating), "a number")
        s = pd.to_numeric(s.astype(object).where(~missing, np.nan))
    values = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad_inf = np.isinf(values) & ~missing
    if bad_inf.any():
        row = int(np.flatnonzero(bad_inf)[0])
        raise _mismatch(
            name, row, values[row], f"a finite number ({dtype})", "got an infinite value"
        )
    if is_float(dtype):
        if dtype.lower() == "float32":
            too_big = ~missing & (np.abs(values) > np.finfo(np.float32).max)
            if too_big.any():
                row = int(np.flatnonzero(too_big)[0])
                raise _mismatch(
                    name, row, values[row], dtype, f"{_show(values[row])} is out of range"
                )
        return s
    frac = ~missing & (values != np.floor(np.where(missing, 0.0, values)))
    if frac.any():
        row = int(np.flatnonzero(frac)[0])
        raise _mismatch(
            name,
            row,
            values[row],
            f"an integer ({dtype})",
            f"got {_show(values[row])} with a fraction",
        )
    info = np.iinfo(dtype.lower())
    present = s[~missing]
    if len(present) and (present.min() < info.min or present.max() > info.max):
        out_of_range = ~missing & ((values < info.min) | (values > info.max))
        row = int(np.flatnonzero(out_of_range)[0]) if out_of_range.any() else 0
        raise _mismatch(
            name, row, s.iloc[row], f"an integer ({dtype})", f"{_show(s.iloc[row])} is out of range"
        )
    return s


def _cast_category(s: pd.Series, name: str, missing: np.ndarray, categories: Any) -> pd.Series:
    allowed = tuple(categories or ())
    unknown = ~missing & ~s.isin(allowed).to_numpy(dtype=bool)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        shown = list(allowed[:_MAX_LISTED]) + (["..."] if len(allowed) > _MAX_LISTED else [])
        raise _mismatch(
            name,
            row,
            s.iloc[row],
            "a known category",
            f"got unknown category {_show(s.iloc[row])}; allowed: {shown}",
        )
    return s


def _cast_datetime(s: pd.Series, name: str, dtype: str, missing: np.ndarray) -> pd.Series:
    import pandas as pd

    match = _DATETIME.match(dtype)
    assert match is not None  # checked when the ColumnSpec was built
    tz = match.group(2)
    present = np.flatnonzero(~missing)
    aware_input = isinstance(s.dtype, pd.DatetimeTZDtype)
    if aware_input or (isinstance(s.dtype, np.dtype) and s.dtype.kind == "M"):
        if aware_input != (tz is not None) and present.size:
            row = int(present[0])
            why = "with a timezone" if aware_input else "without a timezone"
            raise _mismatch(name, row, s.iloc[row], dtype, f"got {s.iloc[row]} {why}")
        if aware_input:  # all missing if the column is naive: NaT converts either way
            return s.dt.tz_convert(tz) if tz is not None else s.dt.tz_localize(None)
        return s.dt.tz_localize(tz) if tz is not None else s
    # Strings (JSON has no datetime type) or Timestamps in an object column, one by one so that
    # the error names the value that does not parse or lacks (or has) a timezone.
    values = s.to_numpy(dtype=object)
    parsed: list[Any] = []
    for row, v in enumerate(values):
        if missing[row]:
            parsed.append(None)
            continue
        if not isinstance(v, str | pd.Timestamp):
            raise _mismatch(name, row, v, f"an ISO 8601 datetime ({dtype})")
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise _mismatch(name, row, v, f"an ISO 8601 datetime ({dtype})") from None
        if ts is pd.NaT:
            raise _mismatch(name, row, v, f"an ISO 8601 datetime ({dtype})")
        if (ts.tzinfo is None) != (tz is None):
            why = "without a timezone offset" if tz else "with a timezone offset"
            raise _mismatch(name, row, v, dtype, f"got {v!r} {why}")
        parsed.append(ts)
    try:
        out = pd.to_datetime(pd.Series(parsed, index=s.index, dtype=object), utc=tz is not None)
    except (ValueError, TypeError, OverflowError) as e:
        raise SchemaMismatch(f"column {name!r}: cannot read datetimes: {e}", column=name) from e
    return out.dt.tz_convert(tz) if tz is not None else out


def _require_utf8(s: pd.Series, name: str, missing: np.ndarray) -> None:
    """Text must encode as UTF-8 (no lone surrogates), on every pandas: pandas 3's string dtype
    refuses such text when it is built, pandas 2's object columns keep it until a log write."""
    present = s.to_numpy(dtype=object)[~missing]
    try:
        "".join(present).encode("utf-8")  # one pass in C; the row is looked for only on failure
    except UnicodeEncodeError:
        for row in np.flatnonzero(~missing):
            value = s.iloc[row]
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _mismatch(
                    name, int(row), value, "text", f"{_show(value)} is not valid Unicode text"
                ) from None


def _default_string_dtype() -> Any:
    """The dtype pandas gives a column of Python strings (``str`` on pandas 3, object before)."""
    import pandas as pd

    return pd.Series(["a"]).dtype


def _finish(s: pd.Series, name: str, dtype: str, missing: np.ndarray, categories: Any) -> pd.Series:
    """The already checked values of ``s`` in the pandas dtype that ``dtype`` names."""
    import pandas as pd

    try:
        if dtype == "category":
            values = s.astype(object).where(~missing, None)
            return pd.Series(
                pd.Categorical(values, categories=list(categories or ())), index=s.index
            )
        if dtype == "string":
            obj = s.astype(object).where(~missing, np.nan)  # NaN: what sklearn imputers expect
            _require_utf8(obj, name, missing)
            return obj.astype(_default_string_dtype())
        if missing.any() and dtype in ("bool", *_NP_INTS):
            row = int(np.flatnonzero(missing)[0])
            raise _mismatch(name, row, s.iloc[row], dtype, f"{dtype} cannot hold missing values")
        if s.dtype == object:  # booleans from JSON: normalise None/NaN before the cast
            s = s.where(~missing, None)
        return s.astype(dtype)
    except SchemaMismatch:
        raise
    except (ValueError, TypeError, OverflowError) as e:  # e.g. datetime out of the unit's range
        raise SchemaMismatch(f"column {name!r}: cannot convert to {dtype}: {e}", column=name) from e
