"""What one tuning trial does: build the model, fit it with intermediate scores for pruning,
score it, and record it as a child run.

Pruning (``MedianPruner``) uses intermediate scores on the validation data: ensembles with
``warm_start`` grow ``n_estimators`` (``max_iter`` for histogram gradient boosting) in
``report_steps`` stages; estimators with ``partial_fit`` report after each epoch; estimators with
``staged_predict_proba``/``staged_predict`` report each stage after one fit; with ``cv_folds``
the running mean over folds is reported. Other estimators are fitted once, without pruning.

Each trial is a child run: tags ``modelloop.parent_run_id`` (when given), ``modelloop.study``,
``modelloop.trial_number``, ``modelloop.trial_state`` (COMPLETE, PRUNED or FAIL) and
``modelloop.worker``; the model params (base and tuned); the metric at each reported step.
COMPLETE and PRUNED trials end FINISHED, failed trials FAILED with a ``modelloop.error`` tag.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, SchemaMismatch

if TYPE_CHECKING:
    import optuna

    from modelloop._client import Client
    from modelloop.pipeline._tune import TuneConfig

#: trial user attribute holding the trial's child run id
RUN_ID_ATTR = "modelloop_run_id"


# -- models, data and scores --------------------------------------------------------------------


def make_model(desc: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """A fresh estimator from ``{"estimator": path, "params": {...}}`` with ``params`` on top."""
    from modelloop.pipeline._spec import build_model

    return build_model(dict(desc), dict(params))


def load_xy(path: str, target: str, features: Sequence[str], what: str) -> tuple[Any, Any]:
    """(features, target) of the parquet file at ``path``; ``what`` names it in errors."""
    import pandas as pd

    frame = pd.read_parquet(path)
    missing = [c for c in [*features, target] if c not in frame.columns]
    if missing:
        raise SchemaMismatch(
            f"{what} data {path}: column(s) {missing} missing (it has {list(frame.columns)})"
        )
    return frame[list(features)], frame[target]


def _score(
    metric: str, y: Any, *, pred: Any = None, proba: Any = None, classes: Any = None
) -> float:
    import numpy as np
    from sklearn import metrics as skm

    if metric == "auc":
        if len(classes) == 2:
            scores = proba[:, 1] if proba.ndim == 2 else proba
            return float(skm.roc_auc_score(np.asarray(y) == classes[1], scores))
        return float(
            skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
        )
    if metric == "log_loss":
        return float(skm.log_loss(y, proba, labels=classes))
    if metric == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if metric == "f1":
        if classes is not None and len(classes) == 2:
            return float(skm.f1_score(y, pred, pos_label=classes[1]))
        return float(skm.f1_score(y, pred, average="macro"))
    if metric == "rmse":
        return float(math.sqrt(skm.mean_squared_error(y, pred)))
    if metric == "mae":
        return float(skm.mean_absolute_error(y, pred))
    if metric == "r2":
        return float(skm.r2_score(y, pred))
    raise InvalidInput(f"unknown metric {metric!r}")


def _needs_proba(metric: str) -> bool:
    return metric in ("auc", "log_loss")


def _evaluate(model: Any, metric: str, X: Any, y: Any) -> float:
    classes = getattr(model, "classes_", None)
    if _needs_proba(metric):
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(X)
        elif metric == "auc" and hasattr(model, "decision_function"):
            proba = model.decision_function(X)
        else:
            raise InvalidInput(f"metric {metric!r} needs a model with predict_proba")
        return _score(metric, y, proba=proba, classes=classes)
    return _score(metric, y, pred=model.predict(X), classes=classes)


def _final_step(model: Any) -> tuple[Any, str, Callable[[Any], Any]]:
    """(final estimator, its param prefix, transform of X up to it) for estimators and Pipelines."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        name, last = model.steps[-1]
        return last, f"{name}__", lambda X: model[:-1].transform(X)
    return model, "", lambda X: X


def _checkpoints(total: int, steps: int) -> list[int]:
    n = max(1, min(steps, total))
    return sorted({max(1, round(total * i / n)) for i in range(1, n + 1)})


def _fit_and_score(
    model: Any,
    cfg: TuneConfig,
    data: Mapping[str, Any],
    report: Callable[[int, float], None],
) -> float:
    """Fit ``model`` and return the metric, calling ``report(step, value)`` on the way where the
    estimator allows intermediate scores. ``report`` raises to prune."""
    from sklearn.base import clone, is_classifier

    metric = cfg.metric
    X, y = data["X_train"], data["y_train"]
    if cfg.cv_folds:
        from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

        if cfg.time_ordered:
            splitter: Any = TimeSeriesSplit(cfg.cv_folds)
        elif is_classifier(model):
            splitter = StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        else:
            splitter = KFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        scores: list[float] = []
        for i, (tr, va) in enumerate(splitter.split(X, y)):
            fold = clone(model).fit(X.iloc[tr], y.iloc[tr])
            scores.append(_evaluate(fold, metric, X.iloc[va], y.iloc[va]))
            mean = sum(scores) / len(scores)
            if i < cfg.cv_folds - 1:
                report(i, mean)
        return mean

    Xv, yv = data["X_valid"], data["y_valid"]
    final, prefix, transform = _final_step(model)
    own = final.get_params(deep=False)
    grow = None
    if "warm_start" in own and "n_estimators" in own:
        grow = "n_estimators"
    elif "warm_start" in own and "max_iter" in own and type(final).__name__.startswith("HistGrad"):
        grow = "max_iter"
    if grow is not None and isinstance(own[grow], int) and own[grow] > 1:
        value = math.nan
        model.set_params(**{f"{prefix}warm_start": True})
        for size in _checkpoints(own[grow], cfg.report_steps):
            model.set_params(**{f"{prefix}{grow}": size})
            model.fit(X, y)
            value = _evaluate(model, metric, Xv, yv)
            if size < own[grow]:
                report(size, value)
        return value

    if hasattr(final, "partial_fit") and not prefix:
        epochs = min(int(own.get("max_iter") or cfg.max_epochs), cfg.max_epochs)
        extra = {"classes": sorted(y.unique())} if is_classifier(final) else {}
        value = math.nan
        for epoch in range(1, epochs + 1):
            final.partial_fit(X, y, **extra)
            value = _evaluate(final, metric, Xv, yv)
            if epoch < epochs:
                report(epoch, value)
        return value

    model.fit(X, y)
    staged = "staged_predict_proba" if _needs_proba(metric) else "staged_predict"
    if hasattr(final, staged):
        classes = getattr(final, "classes_", None)
        outputs = list(getattr(final, staged)(transform(Xv)))
        marks = set(_checkpoints(len(outputs), cfg.report_steps))
        for i, out in enumerate(outputs[:-1], start=1):
            if i in marks:
                kw = {"proba": out} if _needs_proba(metric) else {"pred": out}
                report(i, _score(metric, yv, classes=classes, **kw))
    return _evaluate(model, metric, Xv, yv)


def _suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, d in space.items():
        if d["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, list(d["choices"]))
        elif d["type"] == "int":
            params[name] = trial.suggest_int(
                name,
                int(d["low"]),
                int(d["high"]),
                step=int(d.get("step") or 1),
                log=bool(d.get("log")),
            )
        else:
            params[name] = trial.suggest_float(
                name,
                float(d["low"]),
                float(d["high"]),
                step=d.get("step"),
                log=bool(d.get("log")),
            )
    return params


# -- one trial ----------------------------------------------------------------------------------


def run_trial(
    study: Any,
    trial: Any,
    cfg: TuneConfig,
    job: Mapping[str, Any],
    worker: int,
    data: Mapping[str, Any],
    client: Client,
) -> None:
    """One trial and its child run. The trial's own errors make it FAIL and the study goes on;
    an interruption or a store failure closes the trial as FAIL and stops the worker."""
    from optuna.trial import TrialState

    from modelloop.store import RunStatus

    tags = {
        "modelloop.study": job["study_name"],
        "modelloop.trial_number": str(trial.number),
        "modelloop.worker": str(worker),
    }
    if job.get("parent_run_id"):
        tags["modelloop.parent_run_id"] = job["parent_run_id"]
    run = None
    try:
        run = client.start_run(job["experiment"], name=f"trial-{trial.number}", tags=tags)
        trial.set_user_attr(RUN_ID_ATTR, run.run_id)
        trial.set_user_attr("modelloop_worker", worker)
        state, value, error = _objective(trial, cfg, job, data, run)
        if error is not None:
            trial.set_user_attr("error", error)
            run.set_tag("modelloop.error", error)
        run.set_tag("modelloop.trial_state", state.name)
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"[:4000]
        with contextlib.suppress(Exception):
            trial.set_user_attr("error", error)
            study.tell(trial, state=TrialState.FAIL)
        if run is not None:
            with contextlib.suppress(Exception):
                run.set_tags({"modelloop.error": error, "modelloop.trial_state": "FAIL"})
                interrupted = isinstance(e, KeyboardInterrupt)
                run.end(RunStatus.KILLED if interrupted else RunStatus.FAILED)
        raise
    run.end(RunStatus.FAILED if state == TrialState.FAIL else RunStatus.FINISHED)


def _objective(
    trial: Any, cfg: TuneConfig, job: Mapping[str, Any], data: Mapping[str, Any], run: Any
) -> tuple[Any, float | None, str | None]:
    """(state, value, error) of one trial; the metric is logged at each reported step."""
    import optuna
    from optuna.trial import TrialState

    last_step = 0

    def report(step: int, val: float) -> None:
        nonlocal last_step
        last_step = step
        run.log_metric(cfg.metric, val, step=step)
        trial.report(val, step)
        if cfg.pruning and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    try:
        params = _suggest(trial, cfg.space)
        run.log_params({**job["model"].get("params", {}), **params})
        value = _fit_and_score(make_model(job["model"], params), cfg, data, report)
        if math.isnan(value):
            raise InvalidInput(f"metric {cfg.metric} is NaN")
        run.log_metric(cfg.metric, value, step=last_step + 1)
        return TrialState.COMPLETE, value, None
    except optuna.TrialPruned:
        return TrialState.PRUNED, None, None
    except Exception as e:  # bad params for this trial: recorded, and the study goes on
        return TrialState.FAIL, None, f"{type(e).__name__}: {e}"[:4000]
