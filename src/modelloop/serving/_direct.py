"""A scikit-learn pipeline's first step computed straight from decoded columns.

For a small batch, most of a ``Pipeline([ColumnTransformer(...), model])`` prediction is not the
model: it is building a DataFrame, then the column transformer's pandas indexing, its encoders'
input checks and stacking. When that transformer only passes numeric columns through and
ordinal-encodes string columns (the quickstart's shape), its output is a float matrix that can be
filled directly: numbers cast as the DataFrame would hold them, strings looked up in each
encoder's fitted categories. The rest of the pipeline then gets the same matrix it would have got.

When the model after that step is a HistGradientBoosting estimator with categorical features,
it holds a column transformer of its own (an ordinal encoder of the category codes, then the
numeric columns): the same matrix is then filled in that transformer's column order, each string
looked up straight to the model's own code, and the model is called without it (a shallow copy
that shares the fitted trees). For one row, that transformer is half of the prediction's time.

A :class:`DirectInput` is only made for that shape, and :meth:`DirectInput.agrees` checks it
against the full pipeline, bit for bit, before it is used. A batch it cannot fill exactly (a
missing string, an unknown one where the encoder would raise) goes the full way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from modelloop.models import Signature

__all__ = ["PLAIN_NUMERIC", "DirectInput", "OrdinalColumn", "PassColumn"]

#: signature dtypes a passed-through column may have: held by the DataFrame as a plain numpy
#: column, so its float64 value is the same whichever way it is built
PLAIN_NUMERIC = frozenset(
    ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")
)


@dataclass(frozen=True)
class PassColumn:
    """A numeric column passed through as its float64 value."""

    column: str
    dtype: str


@dataclass(frozen=True)
class OrdinalColumn:
    """A text column looked up in an encoder's fitted categories."""

    column: str
    codes: dict[str, float]  # category -> its code (as the encoder's output dtype)
    unknown: float | None  # the code of an unknown category; None: the encoder raises


class DirectInput:
    """Builds what a fitted pipeline's ColumnTransformer gives, from decoded columns."""

    def __init__(
        self, parts: list[PassColumn | OrdinalColumn], rest: Any, stages: list[Any]
    ) -> None:
        #: what fills each column of the matrix, in order
        self.parts = parts
        #: the estimator (or pipeline) that takes the matrix
        self.rest = rest
        #: the fitted transformers whose output the matrix is, in order (see :meth:`transform`)
        self.stages = stages

    @classmethod
    def plan(cls, model: Any, signature: Signature) -> DirectInput | None:
        """A direct input for ``model``, or None when its shape is not one this module fills."""
        try:
            return cls._plan(model, signature)
        except (AttributeError, TypeError, ValueError, KeyError, ImportError):
            return None

    @classmethod
    def _plan(cls, model: Any, signature: Signature) -> DirectInput | None:
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

        if type(model) is not Pipeline or len(model.steps) < 2 or model.memory is not None:
            return None
        ct = model.steps[0][1]
        if type(ct) is not ColumnTransformer or getattr(ct, "sparse_output_", True):
            return None
        if (getattr(ct, "_sklearn_output_config", None) or {}).get(
            "transform", "default"
        ) != "default":
            return None
        specs = {spec.name: spec for spec in signature.inputs}
        parts: list[PassColumn | OrdinalColumn] = []
        for _name, trans, cols in ct.transformers_:
            if isinstance(cols, str) or not all(isinstance(c, str) for c in cols):
                return None
            if trans == "drop" or not len(cols):
                continue
            if trans == "passthrough" or _identity(trans, FunctionTransformer):
                for c in cols:
                    if specs[c].dtype not in PLAIN_NUMERIC:
                        return None
                    parts.append(PassColumn(c, specs[c].dtype))
            elif type(trans) is OrdinalEncoder:
                parts.extend(_ordinal_parts(trans, cols, specs))
            else:
                return None
        if not parts:
            return None
        if len(model.steps) > 2:
            return cls(parts, model[1:], [ct])
        rest = model.steps[1][1]
        inner = _hist_gradient_boosting_parts(rest, parts)
        if inner is None:
            return cls(parts, rest, [ct])
        parts, bare = inner
        return cls(parts, bare, [ct, rest._preprocessor])

    def matrix(self, columns: dict[str, list[Any]]) -> np.ndarray | None:
        """The transformer's float64 output for validated ``columns``; None when this batch must
        take the full path."""
        n = len(columns[self.parts[0].column])
        out = np.empty((n, len(self.parts)), dtype=np.float64)
        for j, part in enumerate(self.parts):
            values = columns[part.column]
            if isinstance(part, PassColumn):
                if part.dtype in ("float32", "float64"):
                    values = [math.nan if v is None else v for v in values]
                out[:, j] = np.array(values, dtype=part.dtype)
                continue
            codes, unknown = part.codes, part.unknown
            if unknown is None:
                try:
                    out[:, j] = [codes[v] for v in values]
                except (KeyError, TypeError):  # unknown or missing: the encoder's own answer
                    return None
            elif None in values:  # missing: its code depends on what the encoder saw
                return None
            else:
                out[:, j] = [codes.get(v, unknown) for v in values]
        return out

    def transform(self, frame: Any) -> np.ndarray:
        """The matrix the fitted stages themselves make of ``frame`` (a DataFrame of the
        signature's columns): what :meth:`matrix` must equal."""
        out = frame
        for stage in self.stages:
            out = stage.transform(out)
        return np.asarray(out)

    def agrees(self, model: Any, frame: Any, columns: dict[str, list[Any]]) -> bool:
        """Whether the matrix equals the pipeline's own first step on ``frame`` (the DataFrame
        of ``columns``), bit for bit, and so do the predictions made from it; or, when this
        input steps aside for these rows, whether the pipeline refuses them (then its own
        error is the answer either way)."""
        ours = self.matrix(columns)
        if ours is None:
            try:
                model.steps[0][1].transform(frame)
            except ValueError:
                return True
            return False
        theirs = self.transform(frame)
        if theirs.dtype != ours.dtype or not np.array_equal(theirs, ours, equal_nan=True):
            return False
        for method in ("predict", "predict_proba"):
            if not hasattr(model, method):
                continue
            a = np.asarray(getattr(model, method)(frame))
            b = np.asarray(getattr(self.rest, method)(ours))
            if a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                return False
        return True


def _identity(trans: Any, function_transformer: type) -> bool:
    """Whether ``trans`` is the identity a fitted ColumnTransformer puts for "passthrough"."""
    return (
        type(trans) is function_transformer
        and getattr(trans, "func", ...) is None
        and not getattr(trans, "validate", True)
        and (getattr(trans, "_sklearn_output_config", None) or {}).get("transform", "default")
        == "default"
    )


def _hist_gradient_boosting_parts(
    model: Any, parts: list[PassColumn | OrdinalColumn]
) -> tuple[list[PassColumn | OrdinalColumn], Any] | None:
    """For a fitted HistGradientBoosting estimator with its own categorical preprocessor over
    the matrix ``parts`` fill: the parts that fill that preprocessor's output instead (its
    encoded columns first, strings mapped straight to its codes, then its numeric columns),
    and a shallow copy of the model without the preprocessor. None for any other model."""
    try:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
    except ImportError:
        return None
    if type(model) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return None
    pre: Any = getattr(model, "_preprocessor", None)
    if type(pre) is not ColumnTransformer or hasattr(model, "feature_names_in_"):
        return None
    if getattr(pre, "sparse_output_", True) or model.n_features_in_ != len(parts):
        return None
    out: list[PassColumn | OrdinalColumn] = []
    for _name, trans, cols in pre.transformers_:
        index = np.flatnonzero(cols) if np.asarray(cols).dtype == bool else np.asarray(cols)
        if trans == "drop" or not len(index):
            continue
        if type(trans) is FunctionTransformer and _checks_only(trans):
            out.extend(parts[i] for i in index)
        elif type(trans) is OrdinalEncoder:
            composed = _through_encoder(trans, [parts[i] for i in index])
            if composed is None:
                return None
            out.extend(composed)
        else:
            return None
    if len(out) != len(parts):
        return None
    bare = copy.copy(model)  # shares the fitted trees; its input is the preprocessor's output
    bare._preprocessor = None
    return out, bare


def _checks_only(trans: Any) -> bool:
    """Whether a fitted FunctionTransformer only checks a float64 array (what a
    HistGradientBoosting estimator puts around its numeric columns)."""
    func = getattr(trans, "func", None)
    if func is None:
        return True
    from sklearn.utils.validation import check_array

    return (
        getattr(func, "func", None) is check_array
        and not getattr(func, "args", ())
        and list(func.keywords.get("dtype") or []) == [np.float64]
        and (getattr(trans, "_sklearn_output_config", None) or {}).get("transform", "default")
        == "default"
    )


def _through_encoder(
    encoder: Any, parts: list[PassColumn | OrdinalColumn]
) -> list[OrdinalColumn] | None:
    """``parts`` (ordinal codes of strings) sent through a fitted ordinal encoder of those
    codes: each string mapped straight to its final code. None for any other shape."""
    if (
        getattr(encoder, "_infrequent_enabled", True)
        or np.dtype(encoder.dtype) != np.float64
        or encoder.handle_unknown != "use_encoded_value"
    ):
        return None
    unknown2 = float(encoder.unknown_value)
    out = []
    for part, cats in zip(parts, encoder.categories_, strict=True):
        if not isinstance(part, OrdinalColumn) or cats.dtype.kind != "f" or np.isnan(cats).any():
            return None
        position = {float(c): float(i) for i, c in enumerate(cats.tolist())}
        codes = {s: position.get(code, unknown2) for s, code in part.codes.items()}
        unknown = None if part.unknown is None else position.get(part.unknown, unknown2)
        out.append(replace(part, codes=codes, unknown=unknown))
    return out


def _ordinal_parts(encoder: Any, cols: list[str], specs: dict[str, Any]) -> list[OrdinalColumn]:
    if getattr(encoder, "_infrequent_enabled", True) or np.dtype(encoder.dtype) != np.float64:
        raise ValueError("infrequent categories or a non-float64 output")
    if encoder.handle_unknown == "use_encoded_value":
        unknown: float | None = float(encoder.unknown_value)
    elif encoder.handle_unknown == "error":
        unknown = None
    else:
        raise ValueError(f"handle_unknown={encoder.handle_unknown!r}")
    parts = []
    for c, cats in zip(cols, encoder.categories_, strict=True):
        if specs[c].dtype not in ("string", "category") or cats.dtype != object:
            raise ValueError(f"column {c!r} is not a string column")
        codes: dict[str, float] = {}
        for i, cat in enumerate(cats.tolist()):
            if isinstance(cat, str):
                codes[cat] = float(i)
            elif not (cat is None or (isinstance(cat, float) and math.isnan(cat))):
                raise ValueError(f"column {c!r} has a category that is not text: {cat!r}")
        # a missing value (the code of NaN, or the missing code) always takes the full path
        parts.append(OrdinalColumn(c, codes, unknown))
    return parts
