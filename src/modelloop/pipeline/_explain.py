"""Explanations: SHAP values on the model's raw input columns, or permutation importance.

SHAP values are estimated model-agnostically on the raw frame, so a scikit-learn ``Pipeline``
with encoders is explained in terms of the columns a user gave it (strings included). The
estimator is the permutation one (as in ``shap.PermutationExplainer``): for each row, features
are switched from a background sample to the row's values in a random order and again in the
reverse order (an antithetic pair); each feature is credited with the change of the model's
output when it switched. The contributions of a row sum exactly to its output minus the mean
output on the background. Rows are evaluated together in large batches, which keeps 500 rows
of a gradient-boosted pipeline within seconds where a row-by-row explainer takes minutes.

What is explained: the positive-class probability (binary), every class probability
(multiclass; a row's local contributions are those of its predicted class) or the prediction
(regression). A classifier without ``predict_proba`` is explained through
``decision_function``. When the model gives no numeric output or fails on the mixed rows,
permutation importance (``sklearn.inspection``) is computed instead and ``note`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Explanation", "explain"]

_MAX_BATCH_ROWS = 200_000


@dataclass(frozen=True)
class Explanation:
    """Global importance per input column (sorted, largest first) and a sample of rows."""

    method: Literal["shap", "permutation"]
    global_importance: dict[str, float]
    local: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    base_value: float | None = None
    n_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "global_importance": dict(self.global_importance),
            "local": list(self.local),
            "note": self.note,
            "base_value": self.base_value,
            "n_rows": self.n_rows,
        }


def _output_fn(model: Any, task: str) -> Any:
    """The numeric output explained: a function of a raw frame giving (rows,) or (rows, k)."""
    if task in ("binary", "multiclass", "classification"):
        if hasattr(model, "predict_proba"):

            def proba(frame: pd.DataFrame) -> np.ndarray:
                p = np.asarray(model.predict_proba(frame), dtype="float64")
                return p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p

            return proba
        if hasattr(model, "decision_function"):
            return lambda frame: np.asarray(model.decision_function(frame), dtype="float64")
    return lambda frame: np.asarray(model.predict(frame), dtype="float64")


def _rebuild(columns: dict[str, np.ndarray], dtypes: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(columns)
    changed = {c: t for c, t in dtypes.items() if frame[c].dtype != t}
    return frame.astype(changed) if changed else frame


def _shap_values(
    f: Any, X: pd.DataFrame, background: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float | np.ndarray]:
    """Shapley value estimates (rows, features[, outputs]), the outputs and the base value."""
    n, m = X.shape
    b = len(background)
    cols = list(X.columns)
    dtypes = {c: X[c].dtype for c in cols}
    xv = {c: X[c].to_numpy() for c in cols}
    bv = {c: background[c].to_numpy() for c in cols}
    out_x = f(X)
    out_bg = f(background)
    if not np.all(np.isfinite(out_x)) or not np.all(np.isfinite(out_bg)):
        raise ValueError("the model's output has non-finite values")
    base = out_bg.mean(axis=0)
    perm = np.argsort(rng.random((n, m)), axis=1)
    orders = [perm, perm[:, ::-1]]  # an antithetic pair
    phi = np.zeros((n, m, *out_x.shape[1:]))
    rows_per_batch = max(1, _MAX_BATCH_ROWS // b)
    for order in orders:
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(m)[None, :].repeat(n, axis=0), axis=1)
        prev = np.broadcast_to(base, out_x.shape).copy()
        for k in range(1, m + 1):
            if k == m:
                cur = out_x
            else:
                cur = np.empty_like(out_x)
                for start in range(0, n, rows_per_batch):
                    stop = min(n, start + rows_per_batch)
                    nn = stop - start
                    batch = {}
                    for j, c in enumerate(cols):
                        use_x = np.repeat(rank[start:stop, j] < k, b)
                        batch[c] = np.where(
                            use_x, np.repeat(xv[c][start:stop], b), np.tile(bv[c], nn)
                        )
                    y = f(_rebuild(batch, dtypes))
                    cur[start:stop] = y.reshape(nn, b, *y.shape[1:]).mean(axis=1)
            feature = order[:, k - 1]
            phi[np.arange(n), feature] += cur - prev
            prev = cur
    phi /= len(orders)
    return phi, out_x, base


def _importance_plot(importance: dict[str, float], title: str, path: Path) -> Path:
    import plotly.graph_objects as go

    names = list(importance)[::-1]
    fig = go.Figure(go.Bar(x=[importance[k] for k in names], y=names, orientation="h"))
    fig.update_layout(title=title, xaxis_title=title, height=max(300, 28 * len(names) + 120))
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _permutation(
    model: Any, X: pd.DataFrame, y: Any, task: str, random_state: int
) -> tuple[dict[str, float], str]:
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import accuracy_score, r2_score

    what = ""
    if y is None:
        y = np.asarray(model.predict(X))
        what = " against the model's own predictions (no labels given)"
    y = np.asarray(y)
    if task == "regression":
        score, label = (lambda est, Xs, ys: r2_score(ys, est.predict(Xs))), "r2"
    else:
        score, label = (lambda est, Xs, ys: accuracy_score(ys, est.predict(Xs))), "accuracy"
    result = permutation_importance(
        model, X, y, scoring=score, n_repeats=5, random_state=random_state
    )
    values = {c: float(v) for c, v in zip(X.columns, result.importances_mean, strict=True)}
    return values, f"the mean drop in {label} over 5 shuffles of each column{what}"


def explain(
    model: Any,
    X: pd.DataFrame,
    y: Any = None,
    *,
    task: str,
    max_rows: int = 500,
    n_local: int = 20,
    random_state: int = 0,
    out_dir: Path | None = None,
    background_rows: int = 20,
    method: Literal["auto", "shap", "permutation"] = "auto",
) -> tuple[Explanation, dict[str, Path]]:
    """Explain ``model`` on up to ``max_rows`` rows of ``X`` (a random sample).

    ``method="auto"`` computes SHAP values and falls back to permutation importance (with a
    note) when they cannot be computed; ``"shap"`` raises ``InvalidInput`` instead of falling
    back; ``"permutation"`` skips SHAP. With ``out_dir`` a bar chart is written there as
    self-contained HTML: ``shap.html`` or ``importance.html``. Returns the explanation and
    ``{name: path}`` of the files written.
    """
    import pandas as pd

    if not isinstance(X, pd.DataFrame) or X.shape[1] == 0 or len(X) == 0:
        raise InvalidInput("explain: X must be a non-empty DataFrame with at least one column")
    if method not in ("auto", "shap", "permutation"):
        raise InvalidInput(f"explain: method {method!r} is not one of auto, shap, permutation")
    rng = np.random.default_rng(random_state)
    n_all = len(X)
    pos = np.sort(rng.choice(n_all, size=min(max_rows, n_all), replace=False))
    Xs = X.iloc[pos].reset_index(drop=True)
    ys = None if y is None else np.asarray(y)[pos]

    note: str | None = None
    reason = "permutation importance was requested (method='permutation')"
    if method != "permutation":
        try:
            bg_pos = rng.choice(len(Xs), size=min(background_rows, len(Xs)), replace=False)
            background = Xs.iloc[np.sort(bg_pos)].reset_index(drop=True)
            f = _output_fn(model, task)
            phi, out, base = _shap_values(f, Xs, background, rng)
        except Exception as exc:  # any failure of the model on mixed rows means: fall back
            reason = f"SHAP could not explain the model ({type(exc).__name__}: {exc})"
            if method == "shap":
                raise InvalidInput(f"explain: {reason}") from exc
        else:
            return _shap_result(phi, out, base, Xs, pos, model, task, n_local, rng, out_dir)

    importance, how = _permutation(model, Xs, ys, task, random_state)
    importance = dict(sorted(importance.items(), key=lambda kv: -kv[1]))
    note = f"{reason}; global importance is permutation importance: {how}"
    files = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        files["importance"] = _importance_plot(
            importance, "permutation importance", out_dir / "importance.html"
        )
    return Explanation("permutation", importance, [], note, None, len(Xs)), files


def _shap_result(
    phi: np.ndarray,
    out: np.ndarray,
    base: float | np.ndarray,
    Xs: pd.DataFrame,
    pos: np.ndarray,
    model: Any,
    task: str,
    n_local: int,
    rng: np.random.Generator,
    out_dir: Path | None,
) -> tuple[Explanation, dict[str, Path]]:
    cols = [str(c) for c in Xs.columns]
    magnitude = np.abs(phi).mean(axis=0)
    if magnitude.ndim == 2:
        magnitude = magnitude.mean(axis=1)
    importance = dict(
        sorted(((c, float(v)) for c, v in zip(cols, magnitude, strict=True)), key=lambda kv: -kv[1])
    )
    classes = list(getattr(model, "classes_", []))
    local = []
    picks = np.sort(rng.choice(len(Xs), size=min(n_local, len(Xs)), replace=False))
    for i in picks:
        entry: dict[str, Any] = {"row": int(pos[i])}
        if phi.ndim == 3:  # one output per class: explain the predicted one
            k = int(np.argmax(out[i]))
            entry["class"] = _plain(classes[k]) if k < len(classes) else k
            entry["prediction"] = float(out[i, k])
            entry["base_value"] = float(np.asarray(base)[k])
            contrib = phi[i, :, k]
        else:
            entry["prediction"] = float(out[i])
            entry["base_value"] = float(base)
            contrib = phi[i]
        entry["contributions"] = {c: float(v) for c, v in zip(cols, contrib, strict=True)}
        local.append(entry)
    base_value = float(base) if np.ndim(base) == 0 else None
    files = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        files["shap"] = _importance_plot(importance, "mean |SHAP value|", out_dir / "shap.html")
    return Explanation("shap", importance, local, None, base_value, len(Xs)), files


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, str | int | float | bool) else str(value)
