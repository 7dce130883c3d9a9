"""Whether a freshly trained model is one the registry already holds.

Two packages of the same fitted model never have equal bytes: the metadata records when each
was written, and the estimator file records every parameter, including those that only bounded
training (``max_iter=200`` and ``max_iter=150`` give the same trees when early stopping ends
both at 69 iterations). So a candidate is a duplicate of a registered version when:

1. its *fitted state* is the same: :func:`fitted_digest` hashes the estimator's classes and
   everything ``fit`` learned (every attribute that is not a constructor parameter, nested
   estimators included), leaving the constructor parameters out; and
2. it *behaves* the same: :func:`same_behaviour` compares the outputs of both models, bit for
   bit, on the rows given (the test split) and on probe rows made from them that reach what
   parameters can still change at prediction time (unseen categories, missing values, numbers
   far outside the data). A parameter read when predicting (``n_neighbors``,
   ``handle_unknown``) shows there.

The first is stored as a version tag, so only versions with the same fitted state are loaded
for the second.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FITTED_TAG", "fitted_digest", "probe_rows", "same_behaviour"]

#: Version tag: :func:`fitted_digest` of the version's estimator.
FITTED_TAG = "modelloop.fitted_digest"

_MAX_DEPTH = 60


def fitted_digest(model: Any) -> str:
    """sha256 of the classes and learned state of ``model`` (constructor parameters left out,
    nested estimators walked)."""
    h = hashlib.sha256()
    _feed(h, model, set(), 0)
    return h.hexdigest()


def _params(obj: Any) -> set[str]:
    get = getattr(obj, "get_params", None)
    if not callable(get) or isinstance(obj, type):
        return set()
    try:
        return set(get(deep=False))
    except Exception:  # an estimator whose get_params fails: every attribute is state
        return set()


def _feed(h: Any, obj: Any, seen: set[int], depth: int) -> None:
    if depth > _MAX_DEPTH:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, bool | int | str | bytes):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, float):
        h.update(b"f" + struct.pack("<d", obj))
        return
    if isinstance(obj, np.generic):
        h.update(f"np.{obj.dtype.str}:".encode() + obj.tobytes())
        return
    if isinstance(obj, np.ndarray):
        h.update(f"nd.{obj.dtype.str}{obj.shape}:".encode())
        if obj.dtype.hasobject:
            for item in obj.reshape(-1):
                _feed(h, item, seen, depth + 1)
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
        return
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    seen.add(id(obj))
    try:
        if isinstance(obj, list | tuple):
            h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
            for item in obj:
                _feed(h, item, seen, depth + 1)
            return
        if isinstance(obj, dict):
            h.update(f"dict[{len(obj)}]".encode())
            for key in sorted(obj, key=repr):
                _feed(h, key, seen, depth + 1)
                _feed(h, obj[key], seen, depth + 1)
            return
        if isinstance(obj, set | frozenset):
            _feed(h, sorted(obj, key=repr), seen, depth + 1)
            return
        cls = type(obj)
        h.update(f"<{cls.__module__}.{cls.__qualname__}>".encode())
        if callable(obj) and not hasattr(obj, "__dict__"):
            return  # a builtin function: its name is its identity
        params = _params(obj)
        if params:
            # parameters that are estimators hold state of their own (a Pipeline's steps)
            for name in sorted(params):
                value = getattr(obj, name, None)
                if _holds_estimators(value):
                    _feed(h, name, seen, depth + 1)
                    _feed(h, value, seen, depth + 1)
        state = _state(obj)
        for key in sorted(state, key=repr):
            if key in params:
                continue
            _feed(h, key, seen, depth + 1)
            _feed(h, state[key], seen, depth + 1)
    finally:
        seen.discard(id(obj))


def _holds_estimators(value: Any) -> bool:
    if hasattr(value, "get_params") and not isinstance(value, type):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_estimators(v) for v in value)
    return False


def _state(obj: Any) -> dict[Any, Any]:
    """What an object holds: its pickled state where it defines one (Cython trees), else its
    attributes; functions and modules by name only."""
    import types

    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType | types.ModuleType | type):
        return {"name": f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"}
    getstate = getattr(obj, "__getstate__", None)
    if callable(getstate):
        try:
            state = getstate()
        except Exception:  # an object that cannot be pickled: its attributes speak for it
            state = None
        if isinstance(state, dict):
            return state
        if state is not None:
            return {"state": state}
    return dict(getattr(obj, "__dict__", {}) or {})


def probe_rows(frame: pd.DataFrame, n: int = 200) -> pd.DataFrame:
    """Up to ``n`` rows of ``frame`` and, per column, rows where only that column holds an unseen
    category (text columns), a missing value, or a number far below and far above the data."""
    import pandas as pd

    base = frame.head(n).reset_index(drop=True)
    if base.empty:
        return base
    extra = []
    template = base.iloc[[0]]
    for col in frame.columns:
        s = frame[col]
        values: list[Any] = [None]
        if pd.api.types.is_bool_dtype(s):
            values = [None]
        elif pd.api.types.is_numeric_dtype(s):
            finite = s.dropna()
            if len(finite):
                span = float(finite.max()) - float(finite.min())
                width = max(1.0, abs(span)) * 1e3
                values += [float(finite.min()) - width, float(finite.max()) + width]
        elif pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            values.append("__modelloop_unseen__")
        for value in values:
            row = template.copy()
            try:
                row[col] = pd.Series([value], index=row.index).astype(s.dtype)
            except (TypeError, ValueError):
                row[col] = value
            extra.append(row)
    return pd.concat([base, *extra], ignore_index=True) if extra else base


def _outputs(model: Any, rows: pd.DataFrame) -> list[Any]:
    """The model's outputs on each row alone: the array, or the exception's type."""
    out: list[Any] = []
    methods = [m for m in ("predict", "predict_proba") if hasattr(model, m)]
    try:
        whole = [np.asarray(getattr(model, m)(rows)) for m in methods]
        return [("batch", [w.tobytes() + str(w.dtype).encode() for w in whole])]
    except Exception:  # a row the model refuses: compare row by row
        pass
    for i in range(len(rows)):
        row = rows.iloc[[i]]
        try:
            got = [np.asarray(getattr(model, m)(row)) for m in methods]
            out.append([g.tobytes() + str(g.dtype).encode() for g in got])
        except Exception as exc:  # both refusing the same row the same way is equal behaviour
            out.append(type(exc).__name__)
    return out


def same_behaviour(a: Any, b: Any, rows: pd.DataFrame) -> bool:
    """Whether models ``a`` and ``b`` give bit-identical outputs (``predict`` and
    ``predict_proba``) on ``rows`` and on their probe rows (errors compared by type)."""
    if type(a) is not type(b):
        return False
    probe = probe_rows(rows)
    return _outputs(a, probe) == _outputs(b, probe)
