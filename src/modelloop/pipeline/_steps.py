"""The pipeline's steps. Each takes the run context and a folder for its outputs, writes its
files there (they become artifacts of the step run) and returns tags for the step run.

Frames travel between steps as Parquet artifacts; within one process they are also kept in
memory so a step computed right after its input does not read it back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.pipeline._runner import RunContext
    from modelloop.pipeline._spec import PipelineSpec

__all__ = ["STEPS"]


def jsonable(obj: Any) -> Any:
    """Dataclasses, mappings, sequences, numpy scalars and timestamps as plain JSON values
    (non-finite floats become None)."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


def _write_json(path: Path, obj: Any, *, sort_keys: bool = True) -> None:
    text = json.dumps(jsonable(obj), indent=2, sort_keys=sort_keys)
    path.write_text(text, encoding="utf-8")


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    frame.reset_index(drop=True).to_parquet(path, index=False)


def load_source(spec: PipelineSpec, base_dir: Path) -> pd.DataFrame:
    """Read the data source of ``spec`` into a DataFrame (relative paths and callables from
    ``base_dir``, the pipeline file's folder)."""
    import pandas as pd

    from modelloop.pipeline._spec import resolve_callable

    src = spec.data
    if src.path:
        from modelloop._fs import url_suffix
        from modelloop.pipeline._preflight import data_location

        path = data_location(base_dir, src.path)  # a URL stays a URL
        fmt = src.format or ("csv" if url_suffix(path) == ".csv" else "parquet")
        try:
            if fmt == "csv":
                frame = pd.read_csv(path, **src.args)
            else:
                frame = pd.read_parquet(path, **src.args)
        except FileNotFoundError:
            raise InvalidInput(f"data.path: no such file {path}") from None
    elif src.sql:
        import sqlalchemy as sa

        engine = sa.create_engine(src.url or "")
        try:
            with engine.connect() as conn:
                frame = pd.read_sql_query(sa.text(src.sql), conn, **src.args)
        finally:
            engine.dispose()
    else:
        fn = resolve_callable(src.callable or "", base_dir)
        frame = fn(**src.args)
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInput(
                f"data.callable: {src.callable} returned {type(frame).__name__}, not a DataFrame"
            )
    return frame


def step_load(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Read the source and store it whole as ``data.parquet``. Without ``features`` in the spec,
    the features are every column but the target, split, segment and sensitive columns (tag
    ``modelloop.features``)."""
    from modelloop.data import dataset_digest

    frame = load_source(ctx.spec, ctx.base_dir)
    frame.columns = [str(c) for c in frame.columns]
    tags: dict[str, Any] = {"modelloop.rows": len(frame)}
    if ctx.spec.features is None:
        skip = set(ctx.column_roles)  # target, split, segment and sensitive columns
        ctx.features = [c for c in frame.columns if c not in skip]
        tags["modelloop.features"] = json.dumps(ctx.features)
    _write_frame(out / "data.parquet", frame)
    ctx.memory["data"] = frame
    tags["modelloop.data_digest"] = dataset_digest(frame)
    return tags


def used_frame(ctx: RunContext) -> pd.DataFrame:
    """The loaded data restricted to the columns the spec uses. A missing column is a hard
    validation failure (:class:`~modelloop.pipeline._schema.DataValidationError`, exit 11)
    naming each missing column and the field that names it."""
    from modelloop.pipeline._schema import enforce, missing_columns

    frame = ctx.frame("load", "data.parquet", "data")
    enforce(missing_columns(frame.columns, ctx.used_roles, len(frame)), "warn")
    return frame[ctx.used_columns]


def split_parts(ctx: RunContext, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (train, test) parts of ``frame`` as the split step cuts them; ``InvalidInput`` when
    one is empty."""
    split = ctx.spec.split
    size = split.fraction if split.method == "time" and split.fraction else split.test_size
    train, test = split_frame(frame, split, ctx.spec.target, size, by_fraction=split.cutoff is None)
    for name, part in (("train", train), ("test", test)):
        if len(part) == 0:
            raise InvalidInput(f"split: the {name} part is empty ({_describe_split(split)})")
    return train, test


def step_validate(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Infer the schema of the data (stored as ``schema.json``) and check the data against the
    reference schema: the champion's or a declared one. With neither (a first run), the null
    share of every column in the training and test parts is held to
    ``validation.max_null_rate`` and, under a time split, the test part (later data) is checked
    against the schema of the training part: types, ranges and categories. (Under a random split
    both parts are draws of the same rows: their ranges and rare categories differ by chance, so
    only types and null shares are checked.) ``validation.json`` holds the report; what stops
    the run is decided by :func:`~modelloop.pipeline._schema.enforce`."""
    import dataclasses

    from modelloop.pipeline._schema import (
        ValidationReport,
        check_frame,
        enforce,
        infer_schema,
        missing_columns,
        null_share_violations,
        type_violations,
    )

    policy = ctx.spec.validation.on_soft
    data = ctx.frame("load", "data.parquet", "data")
    early = missing_columns(data.columns, ctx.used_roles, len(data))
    if not early.violations:
        data = data[ctx.used_columns]
        early = type_violations(data)
    if early.violations:  # no schema can be inferred: stop here, with the report stored
        _write_json(out / "validation.json", {"reference": None, "report": early.to_dict()})
        ctx.pending_tags["modelloop.violations"] = str(len(early.violations))
        enforce(early, policy)
    frame = data
    schema = infer_schema(frame)
    _write_json(out / "schema.json", schema.to_dict())
    tags = {"modelloop.schema_digest": schema.digest()}
    mode = ctx.reference_mode
    if mode == "off":
        _write_json(out / "validation.json", {"reference": None, "report": None})
        return tags
    extra: tuple[Any, ...] = ()
    if mode == "self":
        train, checked = split_parts(ctx, frame)
        reference = infer_schema(train)
        label = ctx.reference_label or "the training part of this run's data"
        # null shares against the pipeline's limit, in each part: the rates of two parts of
        # one data set differ by chance, so a rise from one to the other proves nothing
        limit = ctx.spec.validation.max_null_rate
        extra = (
            *null_share_violations(train, limit, "the training part of the data"),
            *null_share_violations(checked, limit, "the test part of the data"),
        )
    else:
        assert ctx.reference_schema is not None
        checked, label = frame, ctx.reference_label or "the reference schema"
        # only the columns this spec uses: a feature dropped since the reference is not missing
        used = set(frame.columns)
        reference = dataclasses.replace(
            ctx.reference_schema,
            columns=tuple(c for c in ctx.reference_schema.columns if c.name in used),
        )
    kwargs = {}
    if ctx.spec.validation.range_tolerance is not None:
        kwargs["range_tolerance"] = ctx.spec.validation.range_tolerance
    if ctx.spec.validation.null_rate_tolerance is not None:
        kwargs["null_rate_tolerance"] = ctx.spec.validation.null_rate_tolerance
    report = check_frame(checked, reference, **kwargs)
    if mode == "self":
        by_chance = {"nulls"}
        if ctx.spec.split.method != "time":
            by_chance |= {"min", "max", "categories"}
        split_column = ctx.spec.split.column  # later by construction: not a finding
        kept = [
            v
            for v in report.violations
            if v.rule not in by_chance and not (v.column == split_column and v.rule != "dtype")
        ]
        report = ValidationReport((*extra, *kept), report.n_rows)
    _write_json(
        out / "validation.json",
        {
            "reference": label,
            "checked": "test part" if mode == "self" else "data",
            "policy": policy,
            "reference_schema": reference.to_dict(),
            "report": report.to_dict(),
        },
    )
    tags["modelloop.violations"] = str(len(report.violations))
    tags["modelloop.violations_soft"] = str(len(report.soft))
    ctx.pending_tags.update(tags)
    enforce(report, policy)
    return tags


def _time_values(frame: pd.DataFrame, column: str) -> pd.Series:
    import pandas as pd

    s = frame[column]
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s)


def split_frame(
    frame: pd.DataFrame, spec: Any, target: str, size: float, *, by_fraction: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(earlier/train, later/test) parts: by time column or at random (stratified for
    classification when the classes allow it)."""
    import pandas as pd

    if spec.method == "time":
        t = _time_values(frame, spec.column)
        if not by_fraction and spec.cutoff is not None:
            bound = spec.cutoff
            if pd.api.types.is_datetime64_any_dtype(t):
                bound = pd.Timestamp(spec.cutoff)
                if t.dt.tz is not None and bound.tzinfo is None:
                    bound = bound.tz_localize(t.dt.tz)
            else:
                bound = float(spec.cutoff)
            mask = t < bound
        else:
            # the latest ``size`` share of rows, cut at a time boundary: rows with the same
            # time stay on one side (the test part may be a little larger)
            ordered = t.sort_values(kind="stable")
            n_test = max(1, round(len(frame) * size))
            mask = t < ordered.iloc[len(frame) - n_test]
        return frame[mask.to_numpy()], frame[~mask.to_numpy()]
    from sklearn.model_selection import train_test_split

    stratify = None
    if spec.stratify:
        y = frame[target]
        counts = y.value_counts()
        if len(counts) <= 50 and counts.min() >= 2 and not pd.api.types.is_float_dtype(y):
            stratify = y
    return train_test_split(frame, test_size=size, random_state=spec.seed, stratify=stratify)


def step_split(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Held-out test data: ``train.parquet`` and ``test.parquet``."""
    train, test = split_parts(ctx, used_frame(ctx))
    _write_frame(out / "train.parquet", train)
    _write_frame(out / "test.parquet", test)
    ctx.memory["train"], ctx.memory["test"] = (
        train.reset_index(drop=True),
        test.reset_index(drop=True),
    )
    return {"modelloop.train_rows": len(train), "modelloop.test_rows": len(test)}


def _describe_split(split: Any) -> str:
    if split.method == "time":
        return f"time split on {split.column!r} at " + (
            f"cutoff {split.cutoff}" if split.cutoff else f"fraction {split.fraction}"
        )
    return f"random split, test_size {split.test_size}"


def step_tune(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Search the model params with Optuna on a validation part of the training data; store
    ``best_params.json`` and ``trials.json``."""
    import tempfile

    from modelloop.pipeline._tune import TuneConfig, run_study

    spec, tune = ctx.spec, ctx.spec.tune
    assert tune is not None
    train = ctx.frame("split", "train.parquet", "train")
    time_ordered = spec.split.method == "time"
    if tune.cv_folds and time_ordered:
        # folds over time: every validation fold comes after the rows it is scored against
        order = _time_values(train, spec.split.column or "").sort_values(kind="stable").index
        fit_part, valid_part = train.loc[order], None
    else:
        fit_part, valid_part = split_frame(train, spec.split, spec.target, spec.split.valid_size)
    config = TuneConfig(
        metric=ctx.tune_metric,
        direction=ctx.tune_direction,
        space={k: v.model_dump(exclude_none=True) for k, v in tune.space.items()},
        n_trials=tune.n_trials,
        timeout_s=tune.timeout,
        pruning=tune.pruning,
        seed=tune.seed,
        cv_folds=tune.cv_folds,
        time_ordered=time_ordered,
    )
    with tempfile.TemporaryDirectory(prefix="modelloop-tune-") as tmp:
        train_path, valid_path = Path(tmp) / "train.parquet", Path(tmp) / "valid.parquet"
        _write_frame(train_path, fit_part)
        if valid_part is not None:
            _write_frame(valid_path, valid_part)
        result = run_study(
            config,
            study_name=ctx.memory.get("study_name") or f"{spec.name}-{ctx.current_run_id[:12]}",
            store_url=ctx.client.settings.resolved_store_url,
            model_factory=ctx.model_factory,
            base_params=dict(spec.model.params),
            train_path=train_path,
            valid_path=valid_path if valid_part is not None else None,
            target=spec.target,
            features=ctx.features,
            task=ctx.task,
            workers=ctx.workers or tune.workers,
            parent_run_id=ctx.current_run_id,
            experiment=spec.experiment_name,
            settings=ctx.client.settings,
            executor=ctx.executor,
            ray_address=ctx.ray_address,
        )
    _write_json(out / "best_params.json", result.best_params)
    _write_json(out / "trials.json", result.trials)
    ctx.memory["best_params"] = dict(result.best_params)
    return {
        "modelloop.study": result.study_name,
        "modelloop.best_value": result.best_value,
        "modelloop.trials_complete": result.n_complete,
        "modelloop.trials_pruned": result.n_pruned,
        "modelloop.trials_failed": result.n_failed,
    }


def step_train(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Fit the model on the training part (with the tuned params when tuning) and log it as
    the model package ``model``."""
    from modelloop.pipeline._spec import build_model

    spec = ctx.spec
    train = ctx.frame("split", "train.parquet", "train")
    best = ctx.json("tune", "best_params.json", "best_params") if spec.tuning else {}
    params = {**spec.model.params, **best}
    model = build_model(spec.model, best, base_dir=ctx.base_dir)
    X, y = train[ctx.features], train[spec.target]
    model.fit(X, y)
    _write_json(out / "params.json", params)
    run_id = ctx.current_run_id
    ctx.client.log_dataset(run_id, train, f"{spec.name}-train", role="train", source=spec.name)
    ctx.client.store.log_params(run_id, {k: _param(v) for k, v in params.items()})
    # the signature from the whole training part: string columns that look categorical get
    # their categories, and values outside them are served and counted (unseen="accept")
    ctx.client.log_model(run_id, model, "model", input_example=X.head(5), training_data=X)
    ctx.memory["model"] = model
    return {"modelloop.task": ctx.task}


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _segment_frame(ctx: RunContext, frame: pd.DataFrame) -> pd.DataFrame | None:
    cols = list(dict.fromkeys([*ctx.spec.evaluation.segments, *ctx.spec.evaluation.sensitive]))
    return frame[cols] if cols else None


def run_evaluation(
    ctx: RunContext, model: Any, out: Path | None, columns: list[str] | None = None
) -> Any:
    """Evaluate ``model`` on the test part (its ``columns``, by default the spec's features)
    with the spec's evaluation settings; plots go to ``out`` when given."""
    from modelloop.pipeline._evaluate import evaluate

    ev = ctx.spec.evaluation
    test = ctx.frame("split", "test.parquet", "test")
    evaluation, _plots = evaluate(
        model,
        test[columns or ctx.features],
        test[ctx.spec.target],
        task=ctx.task,
        segment_frame=_segment_frame(ctx, test),
        segments=ev.segments,
        sensitive=ev.sensitive,
        min_segment_rows=ev.min_segment_rows,
        latency_batch_rows=ev.latency_batch_rows,
        out_dir=out,
    )
    return evaluation


def step_evaluate(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Metrics, segments, fairness, calibration and plots of the candidate on the test part."""
    evaluation = run_evaluation(ctx, ctx.model(), out)
    _write_json(out / "evaluation.json", evaluation.to_dict())
    ctx.memory["evaluation"] = evaluation.to_dict()
    ctx.client.store.log_metrics(ctx.current_run_id, metric_list(evaluation.metrics))
    return {"modelloop.primary_metric": evaluation.primary_metric}


def metric_list(values: Mapping[str, Any]) -> list[Any]:
    """The finite numeric ``values`` as store metrics at step 0, stamped now."""
    import math
    import time

    from modelloop.store import Metric

    ts = time.time_ns() // 1_000_000
    return [
        Metric(k, float(v), 0, ts)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]


def step_explain(ctx: RunContext, out: Path) -> dict[str, Any]:
    """SHAP (or permutation) importance on a sample of the test part."""
    from modelloop.pipeline._explain import explain

    spec = ctx.spec.explain
    test = ctx.frame("split", "test.parquet", "test")
    explanation, _plots = explain(
        ctx.model(),
        test[ctx.features],
        test[ctx.spec.target],
        task=ctx.task,
        max_rows=spec.max_rows,
        n_local=spec.n_local,
        random_state=spec.seed,
        out_dir=out,
    )
    # key order is meaning here: global importance is listed largest first
    _write_json(out / "explanation.json", explanation.to_dict(), sort_keys=False)
    return {"modelloop.explain_method": explanation.method}


def step_gate(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Every gate against the candidate's metrics and, for champion gates, the champion's
    metrics on the same test data (a latency gate against the champion times both models
    interleaved, here); stores ``gates.json``."""
    from modelloop.pipeline._evaluate import LATENCY_METRIC, paired_p95_latency_ms
    from modelloop.pipeline._gates import evaluate_gates, parse_gate

    gates = [parse_gate(g) for g in ctx.spec.gates]
    metrics = ctx.json("evaluate", "evaluation.json", "evaluation")["metrics"]
    champion_metrics = None
    latency: dict[str, float] = {}
    champion = ctx.champion
    if champion is not None and any(g.against_champion for g in gates):
        package = ctx.client.load_model(f"models:/{champion.name}/{champion.version}")
        columns = list(package.signature.columns) if package.signature else ctx.features
        test = ctx.frame("split", "test.parquet", "test")
        missing = [c for c in columns if c not in test.columns]
        if missing:
            raise InvalidInput(
                f"gates: the champion {champion.name} v{champion.version} needs columns the "
                f"evaluation data lacks: {', '.join(missing)}"
            )
        champ_eval = run_evaluation(ctx, package.model, None, columns)
        champion_metrics = dict(champ_eval.metrics)
        _write_json(out / "champion_evaluation.json", champ_eval.to_dict())
        if any(g.against_champion and g.metric == LATENCY_METRIC for g in gates):
            # Measured apart, at different times, two latencies differ with the machine's load;
            # measured interleaved, candidate and champion see the same load.
            ev = ctx.spec.evaluation
            candidate_ms, champion_ms = paired_p95_latency_ms(
                [(ctx.model(), test[ctx.features]), (package.model, test[columns])],
                ev.latency_batch_rows,
            )
            metrics = {**metrics, LATENCY_METRIC: candidate_ms}
            champion_metrics[LATENCY_METRIC] = champion_ms
            latency = {"candidate": candidate_ms, "champion": champion_ms}
    results = evaluate_gates(gates, metrics, champion_metrics)
    passed = all(r.passed for r in results)
    _write_json(
        out / "gates.json",
        {
            "passed": passed,
            "results": [r.to_dict() for r in results],
            "champion": (
                {"name": champion.name, "version": champion.version} if champion else None
            ),
            "champion_key": ctx.champion_key,
            **({"paired_p95_latency_ms": latency} if latency else {}),
        },
    )
    return {"modelloop.gates_passed": str(passed).lower()}


def gate_failure_reason(gates: Mapping[str, Any]) -> str:
    """Why nothing was registered, from the gate step's ``gates.json``."""
    failed = [r for r in gates["results"] if not r["passed"]]
    return "gate failed: " + "; ".join(f"{r['expr']} ({r['reason']})" for r in failed)


def step_register(ctx: RunContext, out: Path) -> dict[str, Any]:
    """Register the candidate and move the alias, only when every gate passed; not at all when
    the registry already holds the same model; without moving the alias when the data had soft
    validation problems and ``validation.on_soft`` is ``hold``."""
    from modelloop.pipeline._identity import FITTED_TAG, fitted_digest

    reg = ctx.spec.register
    assert reg is not None
    gates = ctx.json("gate", "gates.json", "gates")
    if not gates["passed"]:
        reason = gate_failure_reason(gates)
        _write_json(out / "register.json", {"registered": False, "reason": reason})
        return {"modelloop.registered": "false"}
    fitted = fitted_digest(ctx.model())
    duplicate = _same_model_version(ctx, fitted)
    if duplicate is not None:
        reason = (
            f"the trained model is {reg.model_name} v{duplicate} again (the same fitted state, "
            "the same outputs on the test split): nothing registered, no alias moved"
        )
        _write_json(
            out / "register.json",
            {
                "registered": False,
                "model_name": reg.model_name,
                "duplicate_of": duplicate,
                "reason": reason,
            },
        )
        return {"modelloop.registered": "false", "modelloop.duplicate_of": duplicate}
    soft = soft_problems(ctx.json("validate", "validation.json", "validation"))
    policy = ctx.spec.validation.on_soft
    hold = bool(soft) and policy == "hold" and reg.alias is not None
    train_run = ctx.step_runs["train"]
    train = ctx.frame("split", "train.parquet", "train")
    reference = train[ctx.features]
    if len(reference) > 50_000:
        reference = reference.sample(50_000, random_state=0)
    tags = {
        "modelloop.pipeline": ctx.spec.name,
        "modelloop.pipeline_run_id": ctx.parent_run_id,
        "modelloop.schema_digest": ctx.step_tags["validate"].get("modelloop.schema_digest", ""),
        "modelloop.schema_run": ctx.step_runs["validate"],
        "modelloop.schema_data_digest": ctx.output_digests["load"],
        "modelloop.validate_reference_key": ctx.reference_key or "none",
        "modelloop.gate_champion_key": ctx.champion_key or "none",
        FITTED_TAG: fitted,
        SOFT_COUNT_TAG: str(len(soft)),
        **({SOFT_TAG: "\n".join(soft[:_MAX_LISTED]), SOFT_POLICY_TAG: policy} if soft else {}),
        **reg.tags,
    }
    mv = ctx.client.register_model(
        train_run,
        reg.model_name,
        description=f"pipeline {ctx.spec.name}",
        tags=tags,
        reference_data=reference,
    )
    onnx: dict[str, Any] | None = None
    if reg.onnx:  # before the alias moves, so a server following it loads the ONNX form
        test = ctx.frame("split", "test.parquet", "test")[ctx.features]
        try:
            done = ctx.client.convert_model(f"models:/{mv.name}/{mv.version}", check_data=test)
            onnx = {
                "converted": done.converted,
                "reason": done.reason,
                "check_rows": done.check_rows,
            }
        except Exception as e:  # the version exists: an optional form must not fail the step
            onnx = {"converted": False, "reason": f"{type(e).__name__}: {e}", "check_rows": 0}
    previous = None
    held = None
    if hold:
        held = (
            f"@{reg.alias} not moved to v{mv.version}: {len(soft)} soft validation problem(s) "
            "and validation.on_soft is hold"
        )
    elif reg.alias:
        previous = ctx.client.set_alias(reg.model_name, reg.alias, mv.version)
    _write_json(
        out / "register.json",
        {
            "registered": True,
            "model_name": reg.model_name,
            "version": mv.version,
            "alias": reg.alias,
            "alias_moved": bool(reg.alias) and not hold,
            "held": held,
            "previous": previous,
            "onnx": onnx,
        },
    )
    from modelloop.registry._card import write_card  # card.md and card.html, never fatal

    write_card(ctx.client, mv.name, mv.version, out)
    step_tags: dict[str, Any] = {
        "modelloop.registered": "true",
        "modelloop.registered_version": mv.version,
    }
    if held:
        step_tags["modelloop.alias_held"] = "true"
    if onnx is not None:
        step_tags["modelloop.onnx"] = "converted" if onnx["converted"] else "declined"
    return step_tags


#: Version and run tags: how many soft validation problems the data had, what they were (one a
#: line), and the ``validation.on_soft`` policy they were registered under.
SOFT_COUNT_TAG = "modelloop.validation_soft"
SOFT_TAG = "modelloop.validation_problems"
SOFT_POLICY_TAG = "modelloop.validation_policy"
_MAX_LISTED = 20


def soft_problems(validation: Mapping[str, Any]) -> list[str]:
    """The soft problems of a validate step's ``validation.json``, one line each."""
    report = validation.get("report") or {}
    return [
        f"[{v['rule']}] {v['message']}"
        for v in report.get("violations", [])
        if v.get("severity") == "soft"
    ]


def _same_model_version(ctx: RunContext, fitted: str) -> int | None:
    """The registered version of ``register.model_name`` that is the candidate again: the same
    fitted state (version tag) and the same outputs on the test split and its probe rows."""
    from modelloop.exceptions import NotFound
    from modelloop.pipeline._identity import FITTED_TAG, same_behaviour

    reg = ctx.spec.register
    assert reg is not None
    try:
        versions = ctx.client.list_model_versions(reg.model_name)
    except NotFound:
        return None
    from modelloop._client import PACKAGE_TAG, _manifest_digest

    items = ctx.client.list_artifacts(ctx.step_runs["train"], "model")
    package_digest = _manifest_digest("model", items) if items else None
    test = ctx.frame("split", "test.parquet", "test")[ctx.features]
    for mv in reversed(versions):  # the newest first
        if package_digest is not None and mv.tags.get(PACKAGE_TAG) == package_digest:
            return int(mv.version)  # the very same package (versions from before FITTED_TAG)
        if mv.tags.get(FITTED_TAG) != fitted:
            continue
        package = ctx.client.load_model(f"models:/{mv.name}/{mv.version}")
        if same_behaviour(ctx.model(), package.model, test):
            return int(mv.version)
    return None


def read_frame_bytes(data: bytes) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


STEPS = {
    "load": step_load,
    "validate": step_validate,
    "split": step_split,
    "tune": step_tune,
    "train": step_train,
    "evaluate": step_evaluate,
    "explain": step_explain,
    "gate": step_gate,
    "register": step_register,
}
