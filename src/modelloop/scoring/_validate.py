"""Validating a batch of input rows against a model signature, row by row.

The check is the signature's own (:meth:`Signature.validate`, the one every prediction goes
through): a batch that passes it whole is scored as it is. When it refuses a batch, the rows it
refuses are found by splitting each column in halves until the refused values stand alone, so a
bad row costs a few extra checks and the good rows of its batch are still scored.

A text column read from Parquet or CSV as Arrow strings is checked on its distinct values: the
signature's check of a text value (a string, valid Unicode, a known category) depends on that
value alone, and such a column holds no other kind of value, so checking each distinct value
once, and the column for missing values, checks every row. The frame it gives is the one the
signature's own check gives (a test compares the two).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import SchemaMismatch
from modelloop.models._dtypes import cast_column

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.models import ColumnSpec, Signature

__all__ = ["split_valid", "valid_whole"]

_ROW = re.compile(r"row \d+: ")


def _cast(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    return cast_column(
        s,
        spec.name,
        spec.dtype,
        nullable=spec.missing_allowed,
        categories=spec.categories if spec.refuses_unseen else None,
    )


def _bad_rows(s: pd.Series, spec: ColumnSpec, start: int, out: dict[int, tuple[str, str]]) -> bool:
    """Record the rows of ``s`` (positions from ``start``) the column refuses; whether any."""
    try:
        _cast(s, spec)
        return False
    except SchemaMismatch as exc:
        if len(s) == 1:
            out.setdefault(start, (spec.name, _ROW.sub("", str(exc), count=1)))
            return True
    mid = len(s) // 2
    left = _bad_rows(s.iloc[:mid], spec, start, out)
    right = _bad_rows(s.iloc[mid:], spec, start + mid, out)
    return left or right


def _suspects(s: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Rows of ``s`` the column may refuse, found cheaply: missing values where none are
    admitted, values outside refused-unseen categories, non-finite numbers. Only a shortcut:
    each suspect is then checked on its own by the signature, and the rest as a whole."""
    from modelloop.models._dtypes import is_float

    missing = s.isna().to_numpy(dtype=bool)
    out = missing.copy() if not spec.missing_allowed else np.zeros(len(s), dtype=bool)
    if spec.categories is not None and spec.refuses_unseen:
        out |= ~missing & ~s.isin(list(spec.categories)).to_numpy(dtype=bool)
    elif is_float(spec.dtype) or spec.dtype.lower().startswith(("int", "uint")):
        kind = getattr(s.dtype, "kind", "O")
        if kind in "iu":
            pass
        elif kind == "f":
            out |= ~missing & ~np.isfinite(s.to_numpy(dtype=np.float64, na_value=np.nan))
    return out


def _check_column(s: pd.Series, spec: ColumnSpec, out: dict[int, tuple[str, str]]) -> None:
    """Record every row of ``s`` (positions) the column refuses."""
    try:
        _cast(s, spec)
        return
    except SchemaMismatch:
        pass
    suspects = np.flatnonzero(_suspects(s, spec))
    for i in suspects:
        _bad_rows(s.iloc[i : i + 1], spec, int(i), out)
    rest = np.ones(len(s), dtype=bool)
    rest[suspects] = False
    positions = np.flatnonzero(rest)
    found: dict[int, tuple[str, str]] = {}
    _bad_rows(s.iloc[positions].reset_index(drop=True), spec, 0, found)
    for pos, why in found.items():
        out.setdefault(int(positions[pos]), why)


def _text_column(column: Any, s: pd.Series, spec: ColumnSpec) -> pd.Series | None:
    """``s`` (the Arrow ``column`` as pandas) as the signature's check of a text column gives
    it, checked on its distinct values; None when the shortcut does not apply (the column is
    not plain Arrow text without missing values)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from modelloop.models._dtypes import _default_string_dtype

    kind = column.type
    if spec.dtype != "string" or column.null_count:
        return None
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    distinct = pc.unique(column).to_pylist()
    _cast(pd.Series(distinct, dtype=object), spec)  # SchemaMismatch: a value is refused
    return s.astype(object).astype(_default_string_dtype())


def valid_whole(table: Any, frame: pd.DataFrame, signature: Signature) -> pd.DataFrame | None:
    """``signature.validate(frame[signature.columns])`` when every row of the batch passes,
    with text columns checked on their distinct values (``table`` is ``frame`` as Arrow);
    None when some row may be refused (:func:`split_valid` then finds which)."""
    import pandas as pd

    out: dict[str, pd.Series] = {}
    try:
        for spec in signature.inputs:
            s = frame[spec.name]
            fast = _text_column(table.column(spec.name), s, spec)
            out[spec.name] = fast if fast is not None else _cast(s, spec)
    except SchemaMismatch:
        return None
    return pd.DataFrame(out, index=frame.index)


def split_valid(
    frame: pd.DataFrame,
    signature: Signature,
    extra_bad: dict[int, tuple[str, str]] | None = None,
    table: Any = None,
) -> tuple[pd.DataFrame, np.ndarray | None, dict[int, tuple[str, str]]]:
    """The validated good rows of ``frame`` (the signature's columns, maybe more), the mask of
    those rows (None: all of them) and, per refused row position, (column, reason).

    ``extra_bad`` are rows already refused (by the CSV reader), left out before checking.
    ``table``: ``frame`` as Arrow, for the check of text columns on their distinct values.
    """
    columns = signature.columns
    if table is not None and not extra_bad:
        whole = valid_whole(table, frame, signature)
        if whole is not None:
            return whole, None, {}
    bad: dict[int, tuple[str, str]] = dict(extra_bad or {})
    candidate = frame[columns]
    keep = np.ones(len(frame), dtype=bool)
    if bad:
        keep[list(bad)] = False
        candidate = candidate[keep]
    try:
        validated = signature.validate(candidate)
    except SchemaMismatch:
        pass
    else:
        return validated, (keep if bad else None), bad
    positions = np.flatnonzero(keep)
    found: dict[int, tuple[str, str]] = {}
    for spec in signature.inputs:
        _check_column(candidate[spec.name].reset_index(drop=True), spec, found)
    for pos, why in found.items():
        bad.setdefault(int(positions[pos]), why)
    keep[list(bad)] = False
    rest = frame[columns][keep]
    try:
        validated = signature.validate(rest)
    except SchemaMismatch as exc:  # a refusal no single row explains: the batch goes aside
        reason = str(exc)
        for i in np.flatnonzero(keep):
            bad[int(i)] = (exc.column or "", reason)
        keep[:] = False
        validated = signature.validate(frame[columns].iloc[:0])
    return validated, keep, bad


def csv_columns(
    table: Any, signature: Signature
) -> tuple[pd.DataFrame, dict[int, tuple[str, str]]]:
    """A CSV batch read as text, converted to what its columns hold (numbers, booleans), and
    the rows whose text is not such a value. Text columns and datetimes stay text: the
    signature's own check reads them."""
    import pandas as pd

    from modelloop.models._dtypes import is_float

    frame = table.to_pandas()
    bad: dict[int, tuple[str, str]] = {}
    for spec in signature.inputs:
        dtype = spec.dtype
        s = frame[spec.name]
        if is_float(dtype) or dtype.lower().startswith(("int", "uint")):
            num = pd.to_numeric(s, errors="coerce")
            wrong = num.isna().to_numpy() & s.notna().to_numpy()
            wrong &= ~s.str.strip().str.lower().isin(("nan", "")).fillna(False).to_numpy()
            for i in np.flatnonzero(wrong):
                bad.setdefault(
                    int(i),
                    (
                        spec.name,
                        f"column {spec.name!r}: expected a number ({dtype}), got {s.iloc[i]!r}",
                    ),
                )
            frame[spec.name] = num
        elif dtype in ("bool", "boolean"):
            low = s.str.strip().str.lower()
            mapped = low.map({"true": True, "false": False, "1": True, "0": False})
            wrong = mapped.isna().to_numpy() & s.notna().to_numpy()
            for i in np.flatnonzero(wrong):
                bad.setdefault(
                    int(i),
                    (spec.name, f"column {spec.name!r}: expected a boolean, got {s.iloc[i]!r}"),
                )
            frame[spec.name] = mapped.astype(object).where(mapped.notna(), None)
    return frame, bad
