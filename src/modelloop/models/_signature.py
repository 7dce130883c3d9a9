"""Model signatures: the columns, dtypes, categories and nullability a model was trained on.

A :class:`Signature` is stored as JSON beside the model and enforced on every prediction: input
is reordered to the training column order and cast to the training dtypes, and anything that
does not fit raises :class:`~modelloop.exceptions.SchemaMismatch` naming the column.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import InvalidInput, SchemaMismatch
from modelloop.models._dtypes import (
    canonical_dtype,
    cast_column,
    check_dtype,
    is_float,
    is_nullable_dtype,
    json_scalar,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ColumnSpec", "Signature", "infer_signature"]

FORMAT_VERSION = 1
_TASKS = ("classification", "regression")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: its name, canonical dtype and which values it admits.

    ``dtype`` is one of ``bool``, ``int8``..``int64``, ``uint8``..``uint64``, ``float32``,
    ``float64``, the pandas nullable ``Int8``..``Int64``, ``UInt8``..``UInt64``, ``Float32``,
    ``Float64``, ``boolean``, ``string``, ``category``, ``datetime64[<unit>]`` (timezone-naive)
    or ``datetime64[<unit>, <tz>]`` (timezone-aware), with unit ``s``, ``ms``, ``us`` or ``ns``.
    ``nullable`` allows missing values; ``allow_nan`` allows NaN in a float column (either flag
    admits NaN there). ``categories`` lists the allowed values of a ``category`` column (str, int,
    float or bool); other values are an error, never silently turned into NaN.
    """

    name: str
    dtype: str
    nullable: bool
    categories: tuple[Any, ...] | None = None
    allow_nan: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput(f"column name must be a non-empty string, got {self.name!r}")
        check_dtype(self.dtype)
        if self.dtype == "category":
            if self.categories is None:
                raise InvalidInput(f"column {self.name!r}: a category column needs its categories")
            object.__setattr__(self, "categories", tuple(self.categories))
        elif self.categories is not None:
            raise InvalidInput(f"column {self.name!r}: only category columns have categories")

    @property
    def missing_allowed(self) -> bool:
        """Whether None/NaN/pd.NA/NaT may appear in this column."""
        return self.nullable or (self.allow_nan and is_float(self.dtype))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; inverse of :meth:`from_dict`."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "nullable": self.nullable,
            "categories": None if self.categories is None else list(self.categories),
            "allow_nan": self.allow_nan,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnSpec:
        """Build from :meth:`to_dict` output; ``InvalidInput`` if malformed."""
        if not isinstance(d, Mapping):
            raise InvalidInput(f"a column spec must be an object, got {type(d).__name__}")
        try:
            name, dtype = d["name"], d["dtype"]
        except KeyError as e:
            raise InvalidInput(f"column spec {dict(d)!r} lacks {e.args[0]!r}") from None
        cats = d.get("categories")
        if cats is not None and not isinstance(cats, list):
            raise InvalidInput(f"column {name!r}: categories must be a list")
        return cls(
            name=name,
            dtype=dtype,
            nullable=_flag(d.get("nullable", False), name, "nullable"),
            categories=None if cats is None else tuple(json_scalar(c, name) for c in cats),
            allow_nan=_flag(d.get("allow_nan", False), name, "allow_nan"),
        )


def _flag(value: Any, column: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"column {column!r}: {key} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Signature:
    """The inputs a model accepts and the outputs it produces.

    ``outputs`` describes the prediction column(s); ``classes`` holds a classifier's ``classes_``
    (JSON scalars) and ``task`` is ``"classification"``, ``"regression"`` or None when unknown.
    """

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...] = ()
    classes: tuple[Any, ...] | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for group in (self.inputs, self.outputs):
            names = [c.name for c in group]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise InvalidInput(f"duplicate column names in signature: {dupes}")
        if self.classes is not None:
            object.__setattr__(
                self, "classes", tuple(json_scalar(c, "class label") for c in self.classes)
            )
        if self.task is not None and self.task not in _TASKS:
            raise InvalidInput(f"task must be one of {_TASKS} or None, got {self.task!r}")

    @property
    def columns(self) -> list[str]:
        """The input column names, in training order."""
        return [c.name for c in self.inputs]

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; inverse of :meth:`from_dict`."""
        return {
            "format_version": FORMAT_VERSION,
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
            "classes": None if self.classes is None else list(self.classes),
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        """Build from :meth:`to_dict` output; ``InvalidInput`` if malformed or too new."""
        if not isinstance(d, Mapping):
            raise InvalidInput(f"a signature must be an object, got {type(d).__name__}")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InvalidInput(
                f"signature format_version {version!r} is newer than this modelloop reads "
                f"({FORMAT_VERSION}); upgrade modelloop"
            )
        inputs, outputs = d.get("inputs"), d.get("outputs", [])
        if not isinstance(inputs, list) or not isinstance(outputs, list):
            raise InvalidInput("signature inputs and outputs must be lists of column specs")
        classes = d.get("classes")
        if classes is not None and not isinstance(classes, list):
            raise InvalidInput("signature classes must be a list or null")
        return cls(
            inputs=tuple(ColumnSpec.from_dict(c) for c in inputs),
            outputs=tuple(ColumnSpec.from_dict(c) for c in outputs),
            classes=None if classes is None else tuple(classes),
            task=d.get("task"),
        )

    def to_json(self) -> str:
        """The signature as a JSON document."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, s: str | bytes) -> Signature:
        """Parse :meth:`to_json` output; ``InvalidInput`` if it is not a valid signature."""
        try:
            d = json.loads(s)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"signature is not valid JSON: {e}") from e
        return cls.from_dict(d)

    # -- enforcement ---------------------------------------------------------------------------

    def validate(
        self, data: pd.DataFrame | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
    ) -> pd.DataFrame:
        """``data`` as a DataFrame with exactly the signature's columns, order and dtypes.

        ``data`` is a DataFrame, a mapping of column name to values (or to one scalar each, for a
        single row), or a list of records. Raises ``SchemaMismatch`` naming the column for a
        missing or extra column, a value of the wrong type, a missing value where the model saw
        none, an infinite number, a fractional number in an integer column or an unknown
        category; ``InvalidInput`` if ``data`` is none of the accepted shapes.
        """
        import pandas as pd

        columns = _as_columns(data, self.columns)
        out = {
            spec.name: cast_column(
                columns[spec.name],
                spec.name,
                spec.dtype,
                nullable=spec.missing_allowed,
                categories=spec.categories,
            )
            for spec in self.inputs
        }
        index = data.index if isinstance(data, pd.DataFrame) else None
        return pd.DataFrame(out, index=index)


# -- shaping input -----------------------------------------------------------------------------


def _check_names(given: Sequence[Any], expected: Sequence[str], where: str = "input") -> None:
    """``SchemaMismatch`` naming every missing, unexpected or repeated column."""
    counts = Counter(given)
    dupes = sorted(str(n) for n, k in counts.items() if k > 1)
    if dupes:
        raise SchemaMismatch(f"{where} has duplicate columns {dupes}", column=dupes[0])
    wanted = set(expected)
    missing = [n for n in expected if n not in counts]
    extra = [str(n) for n in given if n not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise SchemaMismatch(
            f"{where} does not match the model signature: {'; '.join(parts)}",
            column=missing[0] if missing else extra[0],
        )


def _as_columns(data: Any, expected: list[str]) -> Mapping[str, pd.Series]:
    """Split the accepted input shapes into one Series per expected column."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        _check_names(list(data.columns), expected)
        return {name: data[name] for name in expected}
    if isinstance(data, Mapping):
        _check_names(list(data.keys()), expected)
        values = {name: data[name] for name in expected}
        if all(_is_scalar(v) for v in values.values()):  # one row given as {column: value}
            return {name: pd.Series([v]) for name, v in values.items()}
        lengths = {name: _length(name, v) for name, v in values.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidInput(f"columns have different lengths: {lengths}")
        return {name: _series(v) for name, v in values.items()}
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        want = set(expected)
        for row, record in enumerate(data):
            if not isinstance(record, Mapping):
                raise InvalidInput(f"record {row} is a {type(record).__name__}, not a mapping")
            if record.keys() != want:
                _check_names(list(record.keys()), expected, where=f"record {row}")
        return {name: pd.Series([r[name] for r in data]) for name in expected}
    raise InvalidInput(
        "expected a DataFrame, a mapping of column name to values, or a list of records; "
        f"got {type(data).__name__}"
    )


def _is_scalar(v: Any) -> bool:
    return (
        v is None
        or isinstance(v, str | bytes | int | float | bool | np.generic)
        or not hasattr(v, "__len__")
    )


def _length(name: str, v: Any) -> int:
    if _is_scalar(v):
        raise InvalidInput(f"column {name!r}: expected a list of values, got {v!r}")
    if getattr(v, "ndim", 1) != 1:
        raise InvalidInput(f"column {name!r}: expected one-dimensional values")
    return len(v)


def _series(v: Any) -> pd.Series:
    import pandas as pd

    if isinstance(v, pd.Series):
        return v.reset_index(drop=True)
    if isinstance(v, np.ndarray | pd.api.extensions.ExtensionArray):
        return pd.Series(v)
    return pd.Series(list(v))


# -- inference ---------------------------------------------------------------------------------


def _infer_column(name: Any, s: pd.Series) -> ColumnSpec:
    if not isinstance(name, str):
        raise InvalidInput(f"column names must be strings, got {name!r}; rename the columns")
    dtype = canonical_dtype(name, s)
    has_missing = bool(s.isna().any())
    categories = None
    if dtype == "category":
        categories = tuple(json_scalar(c, f"column {name!r} category") for c in s.cat.categories)
    return ColumnSpec(
        name=name,
        dtype=dtype,
        nullable=has_missing or is_nullable_dtype(dtype),
        categories=categories,
        allow_nan=has_missing and is_float(dtype),
    )


def infer_signature(X: pd.DataFrame, y: Any = None, *, model: Any = None) -> Signature:
    """The signature of training data ``X`` and target ``y``; classes and task from ``model``.

    Nullability comes from the data (a column with missing values admits them) or the dtype (the
    pandas nullable dtypes always do). A fitted ``model`` with ``classes_`` makes the task
    ``classification``; a scikit-learn regressor makes it ``regression``.
    """
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        raise InvalidInput(f"infer_signature needs a DataFrame with named columns, got {type(X)}")
    inputs = tuple(_infer_column(name, X[name]) for name in X.columns)
    if len({c.name for c in inputs}) != len(inputs):
        raise InvalidInput("X has duplicate column names")
    outputs: tuple[ColumnSpec, ...] = ()
    if y is not None:
        outputs = _infer_outputs(y)
    classes, task = _classes_and_task(model)
    return Signature(inputs=inputs, outputs=outputs, classes=classes, task=task)


def _infer_outputs(y: Any) -> tuple[ColumnSpec, ...]:
    import pandas as pd

    if isinstance(y, pd.DataFrame):
        return tuple(_infer_column(str(n), y[n]) for n in y.columns)
    if isinstance(y, pd.Series):
        return (_infer_column(str(y.name) if y.name is not None else "prediction", y),)
    arr = np.asarray(y)
    if arr.ndim == 1:
        return (_infer_column("prediction", pd.Series(arr)),)
    if arr.ndim == 2:
        return tuple(
            _infer_column(f"prediction_{i}", pd.Series(arr[:, i])) for i in range(arr.shape[1])
        )
    raise InvalidInput(f"y must be one- or two-dimensional, got shape {arr.shape}")


def _classes_and_task(model: Any) -> tuple[tuple[Any, ...] | None, str | None]:
    if model is None:
        return None, None
    try:
        classes = model.classes_
    except AttributeError:  # unfitted, or not a classifier (a Pipeline raises here too)
        classes = None
    if classes is not None:
        if isinstance(classes, list):  # multi-output classifier: one array per output
            return None, "classification"
        return tuple(json_scalar(c, "class label") for c in np.asarray(classes).tolist()), (
            "classification"
        )
    try:
        from sklearn.base import is_regressor

        if is_regressor(model):
            return None, "regression"
    except (AttributeError, ImportError, TypeError):  # not a scikit-learn estimator: unknown
        pass
    return None, None
