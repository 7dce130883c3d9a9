"""Explanations: SHAP values on the model's raw input columns, or permutation importance.

Two routes compute SHAP values. The ``shap`` library is used where it explains the model exactly
and fast: ``shap.TreeExplainer`` for scikit-learn tree models and ``shap.LinearExplainer`` for
linear models, on all-numeric frames, also as the last step of a ``Pipeline`` whose earlier steps
keep the input columns one-to-one (scalers, imputers). Its values are checked: the contributions
of every row plus the base value must give the model's own output, or the library's values are
not used. Everything else (string or categorical columns, encoders, native categorical splits,
other models) is computed here, on the model's raw input columns, with the same definition as
``shap.ExactExplainer`` over an independent masker: the value of a set of columns is the mean
output when those columns hold the row's values and the others a background row's.

- With at most :data:`EXACT_MAX_FEATURES` (12) columns, the values are exact: every one of the
  2^k sets of columns is evaluated, all rows of a set in one batched prediction (7 columns: 128
  sets), and each column gets its Shapley-weighted marginal contributions.
- With more, a permutation estimate: for each row, columns are switched from the background to
  the row's values in :data:`PERMUTATION_PAIRS` random orders and in each one's reverse (antithetic
  pairs); each column is credited with the change of the output when it switched. The spread of
  the pairs gives each value's standard error, reported in ``Explanation.error``.

Either way a row's contributions sum exactly to its output minus the mean output on the
background. Rows are evaluated together in large batches, which keeps 500 rows of a
gradient-boosted pipeline within seconds where a row-by-row explainer takes minutes.
``Explanation.explainer`` names the route and ``note`` says why the library was not used.

What is explained (``Explanation.output``): the positive-class probability (binary), every class
probability (multiclass; a row's local contributions are those of its predicted class) or the
prediction (regression). Linear classifiers are explained on their linear scale (log-odds for
logistic models) by ``shap.LinearExplainer``. A classifier without ``predict_proba`` is explained
through ``decision_function``. When the model gives no numeric output or fails on the mixed rows,
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
_OWN = "batched permutation Shapley estimate"
_EXACT = "exact Shapley values"
#: Up to this many columns the Shapley values are computed exactly (2**k sets of columns).
EXACT_MAX_FEATURES = 12
#: Antithetic pairs of column orders per row of the permutation estimate.
PERMUTATION_PAIRS = 4
# a library value is used only when base + contributions give the model's output to this
# relative precision (trees are evaluated in float32 by scikit-learn, hence not tighter)
_ADDITIVITY_RTOL = 1e-6


@dataclass(frozen=True)
class Explanation:
    """Global importance per input column (sorted, largest first) and a sample of rows.

    ``explainer`` names what computed the values ("shap.TreeExplainer", "shap.LinearExplainer",
    "exact Shapley values", "batched permutation Shapley estimate" or
    "sklearn.inspection.permutation_importance"); ``output`` is the model output SHAP values
    explain ("probability", "log-odds", "decision function" or "prediction"); ``note`` says why
    the ``shap`` library or SHAP was not used. ``exact`` says whether the values are exact
    (the library's explainers and the exact route) or estimated; for an estimate, ``error``
    gives the standard error of the values (``mean`` and ``max`` over rows and columns,
    ``relative``: the mean over the mean absolute value) and the ``pairs`` of orders used.
    """

    method: Literal["shap", "permutation"]
    global_importance: dict[str, float]
    local: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    base_value: float | None = None
    n_rows: int = 0
    explainer: str | None = None
    output: str | None = None
    exact: bool | None = None
    error: dict[str, Any] | None = None
    #: positions in the explained frame of the background rows SHAP values are relative to
    background_rows: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "explainer": self.explainer,
            "output": self.output,
            "exact": self.exact,
            "error": self.error,
            "background_rows": list(self.background_rows),
            "global_importance": dict(self.global_importance),
            "local": list(self.local),
            "note": self.note,
            "base_value": self.base_value,
            "n_rows": self.n_rows,
        }


@dataclass(frozen=True)
class _Shapley:
    """SHAP values (rows, features[, outputs]), the outputs explained and the base value."""

    phi: np.ndarray
    out: np.ndarray
    base: float | np.ndarray
    explainer: str
    output: str
    note: str | None = None
    error: dict[str, Any] | None = None


def _is_classification(task: str) -> bool:
    return task in ("binary", "multiclass", "classification")


def _output_fn(model: Any, task: str) -> tuple[Any, str]:
    """The numeric output explained, as a function of a raw frame giving (rows,) or (rows, k),
    and its name."""
    if _is_classification(task):
        if hasattr(model, "predict_proba"):

            def proba(frame: pd.DataFrame) -> np.ndarray:
                p = np.asarray(model.predict_proba(frame), dtype="float64")
                return p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p

            return proba, "probability"
        if hasattr(model, "decision_function"):
            fn = lambda frame: np.asarray(model.decision_function(frame), dtype="float64")  # noqa: E731
            return fn, "decision function"
    return (lambda frame: np.asarray(model.predict(frame), dtype="float64")), "prediction"


def _model_kind(est: Any) -> Literal["tree", "linear"] | None:
    """Whether shap has an exact, fast explainer for the estimator: trees or linear models."""
    from sklearn import ensemble, linear_model, svm, tree

    trees = (
        ensemble.RandomForestClassifier,
        ensemble.RandomForestRegressor,
        ensemble.ExtraTreesClassifier,
        ensemble.ExtraTreesRegressor,
        ensemble.GradientBoostingClassifier,
        ensemble.GradientBoostingRegressor,
        ensemble.HistGradientBoostingClassifier,
        ensemble.HistGradientBoostingRegressor,
        tree.DecisionTreeClassifier,
        tree.DecisionTreeRegressor,
    )
    if isinstance(est, trees):
        return "tree"
    glm = (
        linear_model.PoissonRegressor,
        linear_model.GammaRegressor,
        linear_model.TweedieRegressor,
    )
    if isinstance(est, glm):  # a link function: the output is not linear in the inputs
        return None
    in_linear = type(est).__module__.startswith("sklearn.linear_model")
    if (in_linear or isinstance(est, svm.LinearSVC | svm.LinearSVR)) and hasattr(est, "coef_"):
        return "linear"
    return None


def _library(model: Any, X: pd.DataFrame, background: pd.DataFrame, task: str) -> _Shapley | str:
    """SHAP values from the ``shap`` library, or the reason it was not used."""
    import pandas as pd
    from sklearn.pipeline import Pipeline

    strings = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c].dtype)]
    if strings:
        return "shap's explainers cannot take the string or categorical columns " + ", ".join(
            strings
        )
    names = [str(c) for c in X.columns]
    est, Z, Zbg = model, _dense(X, names), _dense(background, names)
    steps = _flat_steps(model) if isinstance(model, Pipeline) else [model]
    if len(steps) > 1:
        est = steps[-1]
        if _model_kind(est) is None:
            return f"shap has no exact, fast explainer for {type(est).__name__}"
        pre = Pipeline([(f"step{i}", step) for i, step in enumerate(steps[:-1])])
        try:
            out_names = [str(n) for n in pre.get_feature_names_out()]
        except Exception:  # a step without output names cannot be mapped back to the columns
            out_names = []
        if out_names != names:
            return (
                "the pipeline's steps before its model do not keep the input columns "
                "one-to-one, so shap's values on their output cannot be given to the columns"
            )
        try:
            Z, Zbg = _dense(pre.transform(X), names), _dense(pre.transform(background), names)
        except Exception as exc:  # left to the own estimator, which calls the whole model
            return f"the pipeline's steps before its model failed ({type(exc).__name__}: {exc})"
    kind = _model_kind(est)
    if kind is None:
        return f"shap has no exact, fast explainer for {type(est).__name__}"
    categorical = getattr(est, "is_categorical_", None)
    if kind == "tree" and categorical is not None and np.any(categorical):
        return (
            "shap.TreeExplainer gives wrong values for native categorical splits "
            f"({type(est).__name__} with categorical features)"
        )
    name = "shap.TreeExplainer" if kind == "tree" else "shap.LinearExplainer"
    try:
        import shap
    except ImportError:
        return "the shap library is not installed"
    try:
        phi, base, ref, output = _library_values(shap, kind, est, model, Z, Zbg, task)
        out = ref(X)
        if phi.ndim == 3 and out.ndim == 1 and phi.shape[2] == 2:  # both classes: keep class 1
            phi, base = phi[:, :, 1], base[1]
        base_value: Any = float(np.asarray(base).reshape(-1)[0]) if phi.ndim == 2 else base
        gap = float(np.max(np.abs(phi.sum(axis=1) + base_value - out)))
    except Exception as exc:  # a model shap cannot take: the own estimator explains it
        return f"{name} failed ({type(exc).__name__}: {str(exc)[:200]})"
    scale = max(1.0, float(np.max(np.abs(out))))
    if not gap <= _ADDITIVITY_RTOL * scale:
        return f"{name}'s values do not add up to the model's output (largest gap {gap:.3g})"
    note = None
    if output == "log-odds":
        note = f"{name} explains the model's log-odds, not its probabilities"
    return _Shapley(phi, out, base_value, name, output, note)


def _library_values(
    shap: Any,
    kind: str,
    est: Any,
    model: Any,
    Z: pd.DataFrame,
    Zbg: pd.DataFrame,
    task: str,
) -> tuple[np.ndarray, np.ndarray, Any, str]:
    """shap's values and base value for ``est`` on ``Z`` and the model output they explain."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    classify = _is_classification(task)
    if isinstance(est, HistGradientBoostingRegressor):
        # shap's values with a background sample do not add up for these models; those from
        # the trees' own cover counts do (the base value is then the training mean)
        explainer = shap.TreeExplainer(est, feature_perturbation="tree_path_dependent")
        phi = explainer.shap_values(Z, check_additivity=False)
        ref, output = _output_fn(model, task)
    elif kind == "tree":
        explainer = shap.TreeExplainer(
            est,
            data=Zbg,
            feature_perturbation="interventional",
            model_output="probability" if classify else "raw",
        )
        # checked below against the model itself, not against shap's copy of the trees
        phi = explainer.shap_values(Z, check_additivity=False)
        ref, output = _output_fn(model, task)
    else:
        explainer = shap.LinearExplainer(est, Zbg)
        phi = explainer.shap_values(Z)
        if classify:
            output = "log-odds" if _is_logistic(est) else "decision function"

            def ref(frame: pd.DataFrame) -> np.ndarray:
                return np.asarray(model.decision_function(frame), dtype="float64")
        else:
            ref, output = _output_fn(model, task)
    base = np.asarray(explainer.expected_value, dtype="float64")
    return np.asarray(phi, dtype="float64"), base, ref, output


def _flat_steps(pipeline: Any) -> list[Any]:
    """The steps of a ``Pipeline``, nested pipelines opened, ``None`` and "passthrough" left out."""
    from sklearn.pipeline import Pipeline

    steps: list[Any] = []
    for _, step in pipeline.steps:
        if isinstance(step, Pipeline):
            steps.extend(_flat_steps(step))
        elif step is not None and step != "passthrough":
            steps.append(step)
    return steps


def _is_logistic(est: Any) -> bool:
    """Whether a linear classifier's decision function is a log-odds."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if isinstance(est, LogisticRegression):
        return True
    return isinstance(est, SGDClassifier) and est.loss == "log_loss"


def _dense(values: Any, names: list[str]) -> pd.DataFrame:
    """Numbers as a float64 frame (what shap takes), missing values as NaN."""
    import pandas as pd

    if hasattr(values, "toarray"):  # a sparse matrix
        values = values.toarray()
    if isinstance(values, pd.DataFrame):  # booleans and nullable integers included
        values = values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.DataFrame(np.asarray(values, dtype="float64"), columns=names)


def _rebuild(columns: dict[str, np.ndarray], dtypes: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(columns)
    changed = {c: t for c, t in dtypes.items() if frame[c].dtype != t}
    return frame.astype(changed) if changed else frame


def _columns(X: pd.DataFrame, background: pd.DataFrame) -> tuple[Any, ...]:
    cols = list(X.columns)
    dtypes = {c: X[c].dtype for c in cols}
    xv = {c: X[c].to_numpy() for c in cols}
    bv = {c: background[c].to_numpy() for c in cols}
    return cols, dtypes, xv, bv


def _ends(f: Any, X: pd.DataFrame, background: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The outputs on the rows and the base value (the mean output on the background)."""
    out_x = f(X)
    out_bg = f(background)
    if not np.all(np.isfinite(out_x)) or not np.all(np.isfinite(out_bg)):
        raise ValueError("the model's output has non-finite values")
    return out_x, out_bg.mean(axis=0)


def exact_shapley_values(
    f: Any, X: pd.DataFrame, background: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, float | np.ndarray]:
    """Exact Shapley values (rows, features[, outputs]) of ``f`` on the rows of ``X``, with the
    value of a set of columns the mean of ``f`` over the ``background`` rows with those columns
    set to the row's values; also the outputs on ``X`` and the base value. Evaluates every one
    of the 2^k sets of columns (all rows of a set, or of several sets, in one call of ``f``)."""
    n, m = X.shape
    b = len(background)
    cols, dtypes, xv, bv = _columns(X, background)
    out_x, base = _ends(f, X, background)
    n_sets = 1 << m
    value = np.empty((n_sets, *out_x.shape))
    value[0] = base  # no column from the row: the background's mean
    value[n_sets - 1] = out_x  # every column from the row
    inner = list(range(1, n_sets - 1))
    if n * b <= _MAX_BATCH_ROWS:
        row_parts, sets_per_call = [(0, n)], max(1, _MAX_BATCH_ROWS // (n * b))
    else:
        step = max(1, _MAX_BATCH_ROWS // b)
        row_parts, sets_per_call = [(i, min(n, i + step)) for i in range(0, n, step)], 1
    for start, stop in row_parts:
        nn = stop - start
        from_x = {c: np.repeat(xv[c][start:stop], b) for c in cols}
        from_bg = {c: np.tile(bv[c], nn) for c in cols}
        for i in range(0, len(inner), sets_per_call):
            sets = inner[i : i + sets_per_call]
            batch = {
                c: np.concatenate([from_x[c] if s >> j & 1 else from_bg[c] for s in sets])
                for j, c in enumerate(cols)
            }
            y = f(_rebuild(batch, dtypes))
            value[sets, start:stop] = y.reshape(len(sets), nn, b, *y.shape[1:]).mean(axis=2)
    # phi_j = sum over sets S without j of |S|! (m - |S| - 1)! / m! * (v(S + j) - v(S))
    weights = np.array(
        [math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)]
    )
    sets_all = np.arange(n_sets)
    sizes = np.array([bin(s).count("1") for s in range(n_sets)])
    phi = np.zeros((n, m, *out_x.shape[1:]))
    for j in range(m):
        without = sets_all[(sets_all >> j & 1) == 0]
        gain = value[without | (1 << j)] - value[without]
        phi[:, j] = np.tensordot(weights[sizes[without]], gain, axes=(0, 0))
    return phi, out_x, base


def _shap_values(
    f: Any,
    X: pd.DataFrame,
    background: pd.DataFrame,
    rng: np.random.Generator,
    pairs: int = PERMUTATION_PAIRS,
) -> tuple[np.ndarray, np.ndarray, float | np.ndarray, np.ndarray | None]:
    """Shapley value estimates (rows, features[, outputs]) from ``pairs`` antithetic pairs of
    column orders per row, the outputs, the base value and each value's standard error (from
    the spread of the pairs; None with one pair)."""
    n, m = X.shape
    b = len(background)
    cols, dtypes, xv, bv = _columns(X, background)
    out_x, base = _ends(f, X, background)
    rows_per_batch = max(1, _MAX_BATCH_ROWS // b)
    estimates = []
    for _ in range(pairs):
        perm = np.argsort(rng.random((n, m)), axis=1)
        phi = np.zeros((n, m, *out_x.shape[1:]))
        for order in (perm, perm[:, ::-1]):  # an antithetic pair
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
        estimates.append(phi / 2)
    stacked = np.stack(estimates)
    se = stacked.std(axis=0, ddof=1) / math.sqrt(pairs) if pairs > 1 else None
    return stacked.mean(axis=0), out_x, base, se


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

    reason = "permutation importance was requested (method='permutation')"
    if method != "permutation":
        try:
            bg_pos = rng.choice(len(Xs), size=min(background_rows, len(Xs)), replace=False)
            background = Xs.iloc[np.sort(bg_pos)].reset_index(drop=True)
            try:
                result: _Shapley | str = _library(model, Xs, background, task)
            except Exception as exc:  # the own estimator may still explain the model
                result = f"shap could not be used ({type(exc).__name__}: {exc})"
            if isinstance(result, str):
                result = _own_values(model, task, Xs, background, rng, result)
        except Exception as exc:  # any failure of the model on mixed rows means: fall back
            reason = f"SHAP could not explain the model ({type(exc).__name__}: {exc})"
            if method == "shap":
                raise InvalidInput(f"explain: {reason}") from exc
        else:
            background_at = [int(p) for p in pos[np.sort(bg_pos)]]
            return _shap_result(result, Xs, pos, model, n_local, rng, out_dir, background_at)

    importance, how = _permutation(model, Xs, ys, task, random_state)
    importance = dict(sorted(importance.items(), key=lambda kv: -kv[1]))
    note = f"{reason}; global importance is permutation importance: {how}"
    files = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        files["importance"] = _importance_plot(
            importance, "permutation importance", out_dir / "importance.html"
        )
    explanation = Explanation(
        "permutation",
        importance,
        [],
        note,
        None,
        len(Xs),
        explainer="sklearn.inspection.permutation_importance",
        output=None,
    )
    return explanation, files


def _own_values(
    model: Any,
    task: str,
    X: pd.DataFrame,
    background: pd.DataFrame,
    rng: np.random.Generator,
    why: str,
) -> _Shapley:
    """Shapley values computed here: exact up to :data:`EXACT_MAX_FEATURES` columns, else the
    permutation estimate with its standard error."""
    f, output = _output_fn(model, task)
    m, b = X.shape[1], len(background)
    if m <= EXACT_MAX_FEATURES:
        phi, out, base = exact_shapley_values(f, X, background)
        note = (
            f"{_EXACT} over all 2^{m} = {1 << m} sets of the {m} columns against {b} "
            f"background rows: {why}"
        )
        return _Shapley(phi, out, base, _EXACT, output, note)
    phi, out, base, se = _shap_values(f, X, background, rng)
    assert se is not None
    mean_abs = float(np.mean(np.abs(phi)))
    error = {
        "kind": "standard error",
        "mean": float(np.mean(se)),
        "max": float(np.max(se)),
        "relative": float(np.mean(se)) / mean_abs if mean_abs > 0 else None,
        "pairs": PERMUTATION_PAIRS,
    }
    relative = f" ({error['relative']:.1%} of the mean |value|)" if error["relative"] else ""
    note = (
        f"{_OWN} ({m} columns: more than {EXACT_MAX_FEATURES} for exact values) from "
        f"{PERMUTATION_PAIRS} antithetic pairs of column orders per row against {b} background "
        f"rows; standard error of a value: mean {error['mean']:.3g}{relative}, largest "
        f"{error['max']:.3g}: {why}"
    )
    return _Shapley(phi, out, base, _OWN, output, note, error)


def _shap_result(
    result: _Shapley,
    Xs: pd.DataFrame,
    pos: np.ndarray,
    model: Any,
    n_local: int,
    rng: np.random.Generator,
    out_dir: Path | None,
    background_rows: list[int],
) -> tuple[Explanation, dict[str, Path]]:
    phi, out, base = result.phi, result.out, result.base
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
    explanation = Explanation(
        "shap",
        importance,
        local,
        result.note,
        base_value,
        len(Xs),
        explainer=result.explainer,
        output=result.output,
        exact=result.explainer != _OWN,
        error=result.error,
        background_rows=background_rows,
    )
    return explanation, files


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, str | int | float | bool) else str(value)
