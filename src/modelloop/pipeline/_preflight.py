"""Checks made before a pipeline runs any step, so that a mistake costs seconds rather than a
training run: every problem is collected and reported at once, one line each, naming the field
and the fix. Also where data given as a path or a URL is read from (a URL never goes through
pathlib, which would fold ``s3://b/k`` into ``s3:/b/k``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    from modelloop.pipeline._spec import PipelineSpec

__all__ = ["check_before_run", "data_location", "open_data"]


def check_before_run(
    spec: PipelineSpec, base_dir: Path, source: str
) -> tuple[Callable[..., Any], str]:
    """The model factory and the task (from the spec, else told by the built model), or
    ``InvalidInput`` listing every problem: the ONNX converter for ``register.onnx``, the
    estimator and whether it takes ``model.params`` and each tuned parameter, the data file
    (local or URL), the data callable, the reference schema file, and — once the task is known
    — the metric names of the gates, ``evaluation.metrics`` and ``tune.metric``."""
    from modelloop.pipeline._spec import metric_problems, resolve_callable

    problems: list[str] = []
    if spec.register is not None and spec.register.onnx:
        from modelloop.registry._onnx import require_converter

        try:
            require_converter()  # before any step runs, not after the version exists
        except InvalidInput as exc:
            problems.append(f"{source}: register.onnx: {exc}")
    factory = None
    task: str = spec.task or "classification"
    try:
        factory = resolve_callable(spec.model.estimator, base_dir)
    except InvalidInput as exc:
        problems.append(f"{source}: model.estimator: {exc}")
    if factory is not None:
        task, more = _model_problems(spec, base_dir, source)
        problems += more
    problems += _source_problems(spec, base_dir, source)
    if spec.task is None and not problems:
        # the task is known only now: the file's metric names are checked against it
        ev = spec.evaluation
        problems += metric_problems(
            task,
            gates=list(spec.gates),
            shown=list(ev.metrics),
            segments=bool(ev.segments),
            sensitive=bool(ev.sensitive),
            tune_metric=spec.tune.metric if spec.tune else None,
            source=source,
        )
    if problems:
        raise InvalidInput("\n".join(dict.fromkeys(problems)))
    assert factory is not None
    return factory, task


def _model_problems(spec: PipelineSpec, base_dir: Path, source: str) -> tuple[str, list[str]]:
    """The task and whether the estimator takes ``model.params`` and each tuned parameter
    (built, not fitted)."""
    from modelloop.pipeline._spec import build_model

    task = spec.task or "classification"
    try:
        model = build_model(spec.model, base_dir=base_dir)
    except InvalidInput as exc:
        return task, [f"{source}: {exc}"]
    if spec.task is None:
        from sklearn.base import is_classifier

        task = "classification" if is_classifier(model) else "regression"
    problems = []
    bad_value = _param_value_problem(model)
    if bad_value:
        problems.append(f"{source}: model.params: {bad_value}")
    if spec.tuning:
        assert spec.tune is not None
        for name, space in spec.tune.space.items():
            value = space.choices[0] if space.choices else space.low
            if space.type == "int" and value is not None:
                value = int(value)
            try:
                build_model(spec.model, {name: value}, base_dir=base_dir)
            except InvalidInput as exc:
                detail = str(exc).removeprefix("model.params: ")
                problems.append(f"{source}: tune.space.{name}: {detail}")
    return task, problems


def _param_value_problem(model: Any) -> str | None:
    """A parameter value scikit-learn would refuse when fitting (``learning_rate=-0.1``),
    found without fitting: the checks scikit-learn estimators declare for their parameters,
    run on the model and on every estimator inside it (a pipeline's steps)."""
    estimators = [model]
    if hasattr(model, "get_params"):
        try:
            nested = model.get_params(deep=True).values()
        except Exception:  # a user's estimator with an unusual get_params: nothing to check
            nested = []
        estimators += [v for v in nested if hasattr(v, "get_params") and not isinstance(v, type)]
    for est in estimators:
        validate = getattr(est, "_validate_params", None)  # scikit-learn >= 1.2
        if not callable(validate):
            continue
        try:
            validate()
        except ValueError as exc:  # InvalidParameterError
            return " ".join(str(exc).split())
        except Exception:  # a check that cannot run here is left to fitting
            continue
    return None


def _source_problems(spec: PipelineSpec, base_dir: Path, source: str) -> list[str]:
    """Whether the data file, the data callable and the reference schema file exist."""
    from modelloop.pipeline._spec import resolve_callable

    problems = []
    src = spec.data
    if src.path:
        problem = _data_problem(data_location(base_dir, src.path))
        if problem:
            problems.append(f"{source}: data.path: {problem}")
    if src.callable:
        try:
            resolve_callable(src.callable, base_dir)
        except InvalidInput as exc:
            problems.append(f"{source}: data.callable: {exc}")
    ref = spec.validation.reference
    reference_file = ref not in ("champion", "none") and spec.validation.enabled
    if reference_file and not (base_dir / ref).is_file():
        problems.append(
            f"{source}: validation.reference: no such file {base_dir / ref} "
            "(a schema JSON file, 'champion' or 'none')"
        )
    return problems


def data_location(base_dir: Path, path: str) -> str:
    """A data path of the spec as a local path (relative to the pipeline file) or a URL, which
    must not go through pathlib (``s3://b/k`` would become ``s3:/b/k``)."""
    from modelloop._fs import is_url

    return path if is_url(path) else str(base_dir / path)


def open_data(location: str) -> Any:
    """A binary file object of a local path or a URL (``FileNotFoundError`` when missing)."""
    from modelloop._fs import is_url

    if not is_url(location):
        return open(location, "rb")  # the caller closes it
    import fsspec

    try:
        return fsspec.open(location, "rb").open()
    except ImportError as exc:
        raise InvalidInput(
            f"reading {location} needs a file system for its protocol ({exc}); for s3:// "
            "URLs: pip install 'modelloop[s3]'"
        ) from None


def _data_problem(location: str) -> str | None:
    """Why the data file cannot be read (for a URL, its file system is asked), or None."""
    try:
        with open_data(location):
            return None
    except FileNotFoundError:
        return f"no such file {location}"
    except InvalidInput as exc:
        return str(exc)
    except OSError as exc:  # permissions, an unreachable object store
        return f"cannot read {location}: {type(exc).__name__}: {exc}"
