"""Model signatures: the columns, dtypes, categories and nullability a model was trained on.

A :class:`Signature` is stored as JSON beside the model and enforced on every prediction: input
is reordered to the training column order and cast to the training dtypes, and anything that
does not fit raises :class:`~modelloop.exceptions.SchemaMismatch` naming the column.

A string column may carry the categories seen in training and a policy for other values:
``unseen="refuse"`` makes them an error, ``unseen="accept"`` lets them through so that serving
counts them and monitoring sees them as drift.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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

#: The newest signature format this modelloop reads. Version 2 adds categories on string
#: columns; a signature without them is still written as version 1, which older readers take.
FORMAT_VERSION = 2
_TASKS = ("classification", "regression")
UNSEEN_POLICIES = ("refuse", "accept")
#: When inferring, a string column is categorical if it has at least this many present values,
#: at most AUTO_MAX_CATEGORIES distinct ones, and each distinct value seen twice on average.
AUTO_MIN_VALUES = 100
AUTO_MAX_CATEGORIES = 1_000

Unseen = Literal["refuse", "accept"]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: its name, canonical dtype and which values it admits.

    ``dtype`` is one of ``bool``, ``int8``..``int64``, ``uint8``..``uint64``, ``float32``,
    ``float64``, the pandas nullable ``Int8``..``Int64``, ``UInt8``..``UInt64``, ``Float32``,
    ``Float64``, ``boolean``, ``string``, ``category``, ``datetime64[<unit>]`` (timezone-naive)
    or ``datetime64[<unit>, <tz>]`` (timezone-aware), with unit ``s``, ``ms``, ``us`` or ``ns``.
    ``nullable`` allows missing values; ``allow_nan`` allows NaN in a float column (either flag
    admits NaN there). ``categories`` lists the known values of a ``category`` column (str, int,
    float or bool) or of a ``string`` column (str), and ``unseen`` says what happens to another
    value: ``"refuse"`` (the default, and the only choice for ``category`` columns, whose dtype
    cannot hold it) raises ``SchemaMismatch``, never silently turning it into NaN; ``"accept"``
    passes it to the model, and the server counts it. ``unseen`` is None when there are no
    categories.
    """

    name: str
    dtype: str
    nullable: bool
    categories: tuple[Any, ...] | None = None
    allow_nan: bool = False
    unseen: Unseen | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput(f"column name must be a non-empty string, got {self.name!r}")
        check_dtype(self.dtype)
        if self.categories is None:
            if self.dtype == "category":
                raise InvalidInput(f"column {self.name!r}: a category column needs its categories")
            if self.unseen is not None:
                raise InvalidInput(
                    f"column {self.name!r}: unseen applies only to a column with categories"
                )
            return
        if self.dtype not in ("category", "string"):
            raise InvalidInput(
                f"column {self.name!r}: only category and string columns have categories, "
                f"not {self.dtype}"
            )
        cats = tuple(self.categories)
        object.__setattr__(self, "categories", cats)
        if self.dtype == "string" and not all(isinstance(c, str) for c in cats):
            bad = next(c for c in cats if not isinstance(c, str))
            raise InvalidInput(
                f"column {self.name!r}: the categories of a string column must be strings, "
                f"got {bad!r}"
            )
        unseen = "refuse" if self.unseen is None else self.unseen
        if unseen not in UNSEEN_POLICIES:
            raise InvalidInput(
                f"column {self.name!r}: unseen must be 'refuse' or 'accept', got {unseen!r}"
            )
        if self.dtype == "category" and unseen == "accept":
            raise InvalidInput(
                f"column {self.name!r}: a category column cannot hold unseen values; make it a "
                "string column with categories to accept them"
            )
        object.__setattr__(self, "unseen", unseen)

    @property
    def refuses_unseen(self) -> bool:
        """Whether a value outside ``categories`` is an error (always so for ``category``)."""
        return self.categories is not None and self.unseen == "refuse"

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
            "unseen": self.unseen,
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
            unseen=d.get("unseen"),  # absent before format 2: categories were refused
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
        text_categories = any(
            c.dtype == "string" and c.categories is not None for c in (*self.inputs, *self.outputs)
        )
        return {
            "format_version": FORMAT_VERSION if text_categories else 1,
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
        category in a column that refuses unseen values (one that accepts them passes it on);
        ``InvalidInput`` if ``data`` is none of the accepted shapes.
        """
        import pandas as pd

        columns = _as_columns(data, self.columns)
        out = {
            spec.name: cast_column(
                columns[spec.name],
                spec.name,
                spec.dtype,
                nullable=spec.missing_allowed,
                categories=spec.categories if spec.refuses_unseen else None,
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


def _infer_column(
    name: Any, s: pd.Series, categorical: Any = False, unseen: Unseen = "refuse"
) -> ColumnSpec:
    """One column's spec. ``categorical`` is False (no categories for a string column), True
    (the values in ``s``), ``"auto"`` (the values in ``s`` if they look categorical) or the
    explicit categories."""
    if not isinstance(name, str):
        raise InvalidInput(f"column names must be strings, got {name!r}; rename the columns")
    dtype = canonical_dtype(name, s)
    has_missing = bool(s.isna().any())
    categories = None
    policy: Unseen | None = None
    if dtype == "category":
        categories = tuple(json_scalar(c, f"column {name!r} category") for c in s.cat.categories)
    elif categorical is not False:
        categories = _string_categories(name, dtype, s, categorical)
        policy = None if categories is None else unseen
    return ColumnSpec(
        name=name,
        dtype=dtype,
        nullable=has_missing or is_nullable_dtype(dtype),
        categories=categories,
        allow_nan=has_missing and is_float(dtype),
        unseen=policy,
    )


def _string_categories(
    name: str, dtype: str, s: pd.Series, categorical: Any
) -> tuple[str, ...] | None:
    if dtype != "string":
        if categorical == "auto":
            return None
        raise InvalidInput(
            f"column {name!r} is {dtype}; only string columns take categories (a pandas "
            "category column brings its own)"
        )
    seen = s.dropna().unique().tolist()
    if categorical == "auto":
        present = int(s.notna().sum())
        if present < AUTO_MIN_VALUES or len(seen) > min(AUTO_MAX_CATEGORIES, present // 2):
            return None
    if categorical is True or categorical == "auto":
        return tuple(sorted(seen))
    given = list(dict.fromkeys(categorical))
    if not all(isinstance(c, str) for c in given):
        raise InvalidInput(f"column {name!r}: categories of a string column must be strings")
    outside = sorted(set(seen) - set(given))
    if outside:
        shown = outside[:20] + (["..."] if len(outside) > 20 else [])
        raise InvalidInput(
            f"column {name!r}: the data holds values missing from the categories given: "
            f"{shown}; add them, or the model would refuse values it was trained on"
        )
    return tuple(given)


def infer_signature(
    X: pd.DataFrame,
    y: Any = None,
    *,
    model: Any = None,
    categorical: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    unseen: Unseen = "accept",
) -> Signature:
    """The signature of training data ``X`` and target ``y``; classes and task from ``model``.

    Nullability comes from the data (a column with missing values admits them) or the dtype (the
    pandas nullable dtypes always do). A fitted ``model`` with ``classes_`` makes the task
    ``classification``; a scikit-learn regressor makes it ``regression``.

    String columns may get categories, with ``unseen`` ("accept" or "refuse") as their policy
    for other values. ``categorical=None`` applies a rule: a string column with at least
    ``AUTO_MIN_VALUES`` (100) present values, at most ``AUTO_MAX_CATEGORIES`` (1,000) distinct
    values and each seen twice on average gets the distinct values as categories (so a
    five-row input example never does). A list of column names gives exactly those columns
    the values found in ``X``; a mapping of column name to categories gives those lists (which
    must hold every value in ``X``); other string columns then get none. Pandas ``category``
    columns always keep their own categories and refuse other values.
    """
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        raise InvalidInput(f"infer_signature needs a DataFrame with named columns, got {type(X)}")
    if X.columns.duplicated().any():
        raise InvalidInput("X has duplicate column names")
    if unseen not in UNSEEN_POLICIES:
        raise InvalidInput(f"unseen must be 'refuse' or 'accept', got {unseen!r}")
    chosen = _categorical_choice(categorical, X)
    inputs = tuple(
        _infer_column(name, X[name], "auto" if chosen is None else chosen.get(name, False), unseen)
        for name in X.columns
    )
    outputs: tuple[ColumnSpec, ...] = ()
    if y is not None:
        outputs = _infer_outputs(y)
    classes, task = _classes_and_task(model)
    return Signature(inputs=inputs, outputs=outputs, classes=classes, task=task)


def _categorical_choice(categorical: Any, X: pd.DataFrame) -> dict[str, Any] | None:
    """None for the rule, else column name -> True (values from X) or explicit categories."""
    if categorical is None:
        return None
    if isinstance(categorical, str):
        raise InvalidInput(f"categorical must be a list of column names, got {categorical!r}")
    chosen: dict[str, Any]
    if isinstance(categorical, Mapping):
        chosen = {}
        for name, cats in categorical.items():
            if isinstance(cats, str) or not isinstance(cats, Sequence):
                raise InvalidInput(f"categorical[{name!r}] must be a list of categories")
            chosen[name] = cats
    else:
        chosen = dict.fromkeys(categorical, True)
    unknown = [str(n) for n in chosen if n not in X.columns]
    if unknown:
        raise InvalidInput(f"categorical names columns the data lacks: {unknown}")
    return chosen


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
