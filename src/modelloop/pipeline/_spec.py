"""The pipeline file (``modelloop.yaml``): its schema, loading, ``--set`` overrides, and the
model builder shared with the tuner.

Every wrong field is reported once, with its location (``modelloop.yaml: model.params.max_iter:
...``), and all of them in one :class:`~modelloop.exceptions.InvalidInput`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modelloop._validation import error_lines
from modelloop.exceptions import InvalidInput

__all__ = [
    "DataSpec",
    "EvaluationSpec",
    "ExplainSpec",
    "ModelSpec",
    "ParamSpace",
    "PipelineSpec",
    "RegisterSpec",
    "SplitSpec",
    "TuneSpec",
    "ValidationSpec",
    "apply_overrides",
    "build_model",
    "callable_name",
    "load_spec",
    "metric_problems",
    "parse_spec",
    "resolve_callable",
    "spec_document",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where the data comes from: exactly one of ``path``, ``sql`` (with ``url``) or ``callable``.

    ``path`` is a CSV or Parquet file, relative to the pipeline file. ``callable`` is
    ``"pkg.mod:fn"`` or ``"file.py:fn"`` (relative to the pipeline file), or in Python the
    function itself, called with ``args`` and returning a DataFrame. A file is cached by its
    content. SQL and callable sources are read on every run by default (the table or the files
    a callable reads may change); later steps still hit the cache when the rows are the same.
    ``cache: true`` caches them by the query and URL, or the callable's source and ``args``.
    """

    path: str | None = None
    format: Literal["csv", "parquet"] | None = None
    sql: str | None = None
    url: str | None = None
    callable: str | Callable[..., Any] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    cache: bool | None = None

    @property
    def cached(self) -> bool:
        """Whether the load step may be reused: a file always, SQL and callables on request."""
        return self.cache if self.cache is not None else bool(self.path)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        given = [k for k in ("path", "sql", "callable") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'path', 'sql' or 'callable'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.sql and not self.url:
            raise ValueError("an 'sql' source needs a database 'url'")
        if (
            self.path
            and self.format is None
            and Path(self.path).suffix.lower()
            not in {
                ".csv",
                ".parquet",
                ".pq",
            }
        ):
            raise ValueError(f"cannot tell the format of {self.path!r}: set 'format'")
        if isinstance(self.callable, str):
            _check_import_path(self.callable)
        return self


class SplitSpec(_Strict):
    """Held-out test data: ``random`` (``test_size``, ``seed``, ``stratify``) or ``time`` (rows
    before ``cutoff`` train, the rest test; or the latest ``fraction`` of rows by ``column`` as
    test). ``valid_size`` is the share of the training part the tuner holds out (the latest rows
    under a time split)."""

    method: Literal["random", "time"] = "random"
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    stratify: bool = True
    column: str | None = None
    cutoff: str | None = None
    fraction: float | None = Field(None, gt=0, lt=1)
    valid_size: float = Field(0.2, gt=0, lt=1)

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff(cls, v: Any) -> Any:
        """Unquoted YAML dates and numbers are read as such: keep them as text."""
        import datetime as dt

        if isinstance(v, bool):
            raise ValueError("expected a date, time or number, not a boolean")
        if isinstance(v, dt.date | dt.datetime):
            return v.isoformat()
        if isinstance(v, int | float):
            return repr(v)
        return v

    @model_validator(mode="after")
    def _time_fields(self) -> SplitSpec:
        if self.method == "time":
            if not self.column:
                raise ValueError("a time split needs 'column'")
            if (self.cutoff is None) == (self.fraction is None):
                raise ValueError("a time split needs exactly one of 'cutoff' or 'fraction'")
        elif self.column or self.cutoff or self.fraction is not None:
            raise ValueError("'column', 'cutoff' and 'fraction' belong to method: time")
        return self


class ValidationSpec(_Strict):
    """Data validation of the loaded data. ``reference``: ``champion`` (the schema stored with the
    current champion of ``register.model_name``; with no champion yet, the schema of this run's
    own training part, checked on its test part), a schema JSON file relative to the pipeline
    file, or ``none`` (only infer and store the schema).

    Hard violations always stop the run (exit 11). ``on_soft`` says what soft ones do:
    ``warn`` (default) registers and moves the alias, listing them in the summary and tagging
    the version; ``hold`` registers without moving the alias; ``fail`` stops the run before
    training, as a hard violation does. ``max_null_rate``: with no reference schema (a first
    run), a column with a larger share of nulls is a hard violation."""

    enabled: bool = True
    reference: str = "champion"
    range_tolerance: float | None = Field(None, ge=0)
    null_rate_tolerance: float | None = Field(None, ge=0)
    on_soft: Literal["warn", "hold", "fail"] = "warn"
    max_null_rate: float = Field(0.05, ge=0, le=1)


class ModelSpec(_Strict):
    """``estimator``: import path (``pkg.mod:Name``, ``pkg.mod.Name`` or ``file.py:fn``) of a
    scikit-learn estimator class or of a function returning an estimator or pipeline (in Python,
    also the class or function itself); it is called with ``params``."""

    estimator: str | Callable[..., Any]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _path(cls, v: str | Callable[..., Any]) -> str | Callable[..., Any]:
        if isinstance(v, str):
            _check_import_path(v)
        return v


class ParamSpace(_Strict):
    """One tuned parameter: ``int``/``float`` between ``low`` and ``high`` (``log``, ``step``),
    or ``categorical`` over ``choices``."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs non-empty 'choices'")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"an {self.type} parameter needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"'low' ({self.low}) is above 'high' ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log-scaled parameter needs 'low' > 0")
        return self


class TuneSpec(_Strict):
    """Hyper-parameter search (Optuna): ``space`` of model params, the ``metric`` and
    ``direction`` to optimise on the validation part, and a trial and/or time budget."""

    enabled: bool = True
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    workers: int = Field(1, ge=1)
    pruning: bool = True
    seed: int = 0
    cv_folds: int = Field(0, ge=0)
    study: str | None = Field(None, min_length=1, max_length=200)
    """A fixed study name: workers started on several machines (``modelloop pipeline run
    --workers N`` with the same ``tune.study`` and PostgreSQL store) join one study. Default: a
    new study per tune step run."""

    @model_validator(mode="after")
    def _budget(self) -> TuneSpec:
        if self.enabled and not self.space:
            raise ValueError("tuning needs a search 'space' (or enabled: false)")
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give a budget: 'n_trials', 'timeout' or both")
        if self.cv_folds == 1:
            raise ValueError("'cv_folds' must be 0 (a validation part) or at least 2")
        if self.metric is not None or self.direction is not None:
            from modelloop.pipeline._tune import METRICS

            if self.metric is not None and self.metric not in METRICS:
                raise ValueError(f"unknown metric {self.metric!r}; use one of {list(METRICS)}")
            if self.metric is not None and self.direction is not None:
                natural = METRICS[self.metric][1]
                if self.direction != natural:
                    raise ValueError(
                        f"{self.metric!r} improves when it goes "
                        f"{'up' if natural == 'maximize' else 'down'}: direction must be "
                        f"{natural!r}, not {self.direction!r}"
                    )
        return self


class EvaluationSpec(_Strict):
    """Metrics on the test split: ``metrics`` listed in the summary (empty: all), per-segment
    metrics for the ``segments`` columns, fairness for the ``sensitive`` columns."""

    metrics: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    sensitive: list[str] = Field(default_factory=list)
    min_segment_rows: int = Field(30, ge=1)
    latency_batch_rows: int = Field(1000, ge=1)


class ExplainSpec(_Strict):
    """Explanations (SHAP, or permutation importance where SHAP cannot explain the model)."""

    enabled: bool = True
    max_rows: int = Field(500, ge=10)
    n_local: int = Field(20, ge=0)
    seed: int = 0


class RegisterSpec(_Strict):
    """Registration when every gate passes: ``model_name``, and the ``alias`` to point at the new
    version (also the champion the gates compare against). With ``onnx``, the version's ONNX form
    is attached before the alias moves, checked against scikit-learn on the test split (a model
    that does not convert is registered all the same, and the reason recorded)."""

    model_name: str
    alias: str | None = "champion"
    onnx: bool = False
    #: the alias whose version champion gates and ``validation.reference: champion`` compare
    #: with, when it is not ``alias`` (the loop registers as ``challenger``, gated against
    #: ``champion``)
    compare_with: str | None = None
    #: extra tags for the registered version
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def champion_alias(self) -> str | None:
        """The alias of the version to compare with: ``compare_with``, else ``alias``."""
        return self.compare_with or self.alias

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        from modelloop._names import check_model_name

        try:
            check_model_name(v)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
        return v


# "register" is also ABCMeta.register on the class (pydantic warns); instances see the field.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class PipelineSpec(_Strict):
        """A whole pipeline: the content of ``modelloop.yaml``.

        Without ``features``, every column but the target and the split, segment and sensitive
        columns is a feature (list a segment column in ``features`` to use it as one too)."""

        name: str = Field(min_length=1)
        experiment: str | None = None
        data: DataSpec
        target: str = Field(min_length=1)
        features: list[str] | None = None
        task: Literal["classification", "regression"] | None = None
        split: SplitSpec = Field(default_factory=SplitSpec)
        validation: ValidationSpec = Field(default_factory=ValidationSpec)
        model: ModelSpec
        tune: TuneSpec | None = None
        evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
        explain: ExplainSpec = Field(default_factory=ExplainSpec)
        gates: list[str] = Field(default_factory=list)
        register: RegisterSpec | None = None
        #: the loop policy (``modelloop loop``), validated by :mod:`modelloop.loop` when used
        loop: dict[str, Any] | None = None

        @field_validator("features")
        @classmethod
        def _features(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
            if v is None:
                return v
            if not v:
                raise ValueError("'features' is empty")
            target = info.data.get("target")
            if target in v:
                raise ValueError(f"the target {target!r} is also listed in 'features'")
            dupes = sorted({f for f in v if v.count(f) > 1})
            if dupes:
                raise ValueError(f"{', '.join(dupes)} listed more than once")
            return v

        @property
        def experiment_name(self) -> str:
            """The experiment the pipeline's runs go to (default: the pipeline name)."""
            return self.experiment or self.name

        @property
        def tuning(self) -> bool:
            """Whether the pipeline tunes before training."""
            return self.tune is not None and self.tune.enabled


# -- loading ------------------------------------------------------------------------------------


def parse_spec(
    raw: Mapping[str, Any] | PipelineSpec,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    source: str = "pipeline",
) -> PipelineSpec:
    """Validate a spec given as a mapping (after applying ``overrides``); ``InvalidInput`` lists
    every wrong field as ``<source>: <location>: <problem>``."""
    if isinstance(raw, PipelineSpec):
        if not overrides:
            return raw
        raw = raw.model_dump(exclude_unset=True)
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    data = apply_overrides(raw, overrides, source=source)
    errors: list[str] = []
    spec = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors += error_lines(exc, source)
    errors += _check_metric_names(data, source)
    if errors:
        raise InvalidInput("\n".join(dict.fromkeys(errors)))
    assert spec is not None
    return spec


def load_spec(
    path: str | os.PathLike[str], overrides: Sequence[str] | Mapping[str, Any] = ()
) -> PipelineSpec:
    """Read and validate a ``modelloop.yaml`` file (``NotFound`` if missing)."""
    import yaml

    from modelloop.exceptions import NotFound

    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no pipeline file at {p}")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except _DuplicateKey as exc:
        raise InvalidInput(f"{p.name}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InvalidInput(f"{p.name}: not valid YAML{where}: {exc}") from None
    return parse_spec(raw if raw is not None else {}, overrides=overrides, source=p.name)


class _DuplicateKey(Exception):
    pass


def _unique_key_loader() -> type:
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the
    last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first != line:
                    raise _DuplicateKey(
                        f"key {key!r} given twice (line {first} and line {line}, column "
                        f"{key_node.start_mark.column + 1})"
                    )
            return super().construct_mapping(node, deep=deep)

    return Loader


_FLOAT_E = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)[eE][+-]?\d{1,3}")


def _override_value(text: str) -> Any:
    """An override value read as YAML, with ``1e-3`` a float (YAML 1.1 reads it as text)."""
    import yaml

    if not text.strip():
        return ""
    if _FLOAT_E.fullmatch(text.strip()) and math.isfinite(float(text)):
        return float(text)  # text that overflows (a git hash like 5e81234) stays text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    raw: Mapping[str, Any],
    overrides: Sequence[str] | Mapping[str, Any],
    *,
    source: str = "pipeline",
) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``key.path=value`` overrides applied; values are read as YAML
    (``50`` an int, ``0.1`` and ``1e-3`` floats, ``false`` a bool, ``[a, b]`` a list, ``null``
    None)."""
    import copy

    data = copy.deepcopy(dict(raw))
    errors: list[str] = []  # every wrong override, reported together
    if isinstance(overrides, Mapping):
        items = [(str(k), v) for k, v in overrides.items()]
    else:
        items = []
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                errors.append(f"--set {item!r}: expected key.path=value")
                continue
            items.append((key.strip(), _override_value(text)))
    for key, value in items:
        try:
            _set_path(data, key, value, source)
        except InvalidInput as exc:
            errors.append(str(exc))
    if errors:
        raise InvalidInput("\n".join(errors))
    return data


def _set_path(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if any(not p for p in parts):
        raise InvalidInput(f"{source}: override key {key!r} has an empty part")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, key)]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict | list):
            where = ".".join(parts[: i + 1])
            raise InvalidInput(f"{source}: cannot set {key!r}: {where} is not a mapping")
        node = nxt
    if isinstance(node, list):
        node[_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _index(node: list[Any], part: str, key: str) -> int:
    try:
        i = int(part)
        node[i]
    except (ValueError, IndexError):
        raise InvalidInput(
            f"override {key!r}: {part!r} is not an index of a list of {len(node)}"
        ) from None
    return i


def _check_metric_names(data: Mapping[str, Any], source: str) -> list[str]:
    """Problems with the gates and the metric names of ``data`` (the raw spec, checked even
    when other fields are wrong so that every problem is reported at once)."""
    task = data.get("task") if data.get("task") in ("classification", "regression") else None
    evaluation, tune = data.get("evaluation"), data.get("tune")
    evaluation = evaluation if isinstance(evaluation, Mapping) else {}
    return metric_problems(
        task,
        gates=data.get("gates"),
        shown=evaluation.get("metrics"),
        segments=bool(evaluation.get("segments")),
        sensitive=bool(evaluation.get("sensitive")),
        tune_metric=tune.get("metric") if isinstance(tune, Mapping) else None,
        source=source,
    )


def metric_problems(
    task: str | None,
    *,
    gates: Any,
    shown: Any = None,
    segments: bool = False,
    sensitive: bool = False,
    tune_metric: Any = None,
    source: str = "pipeline",
) -> list[str]:
    """One line per malformed gate, and per gate, ``evaluation.metrics`` entry or
    ``tune.metric`` naming a metric that a ``task`` pipeline (None: either task) with these
    segment and sensitive settings never reports."""
    from modelloop.pipeline._gates import parse_gate

    problems = []
    for i, expr in enumerate(gates if isinstance(gates, list) else []):
        if not isinstance(expr, str):
            continue  # the schema reports it
        try:
            metric = parse_gate(expr).metric
        except InvalidInput as exc:
            problems.append(f"{source}: gates.{i}: {exc}")
            continue
        problem = _metric_problem(metric, task, segments, sensitive)
        if problem:
            problems.append(f"{source}: gates.{i}: {expr.strip()!r}: {problem}")
    for i, name in enumerate(shown if isinstance(shown, list) else []):
        if not isinstance(name, str):
            continue
        problem = _metric_problem(name, task, segments, sensitive)
        if problem:
            problems.append(f"{source}: evaluation.metrics.{i}: {problem}")
    if isinstance(tune_metric, str) and task is not None:
        from modelloop.pipeline._tune import METRICS

        if tune_metric in METRICS and METRICS[tune_metric][0] != task:
            problems.append(
                f"{source}: tune.metric: {tune_metric!r} is a {METRICS[tune_metric][0]} metric "
                f"and this is a {task} pipeline; use one of "
                f"{', '.join(k for k, v in METRICS.items() if v[0] == task)}"
            )
    return problems


def _metric_problem(name: str, task: str | None, segments: bool, sensitive: bool) -> str | None:
    """Why a pipeline never reports the metric ``name``, naming the fix; None if it may."""
    import difflib

    from modelloop.pipeline._evaluate import (
        FAIRNESS_METRICS,
        SEGMENT_GAP_METRIC,
        TASK_METRICS,
        metric_names,
    )

    known = metric_names(task, segments=segments, sensitive=sensitive)
    if name in known:
        return None
    if name == SEGMENT_GAP_METRIC:
        return f"{name!r} is reported only with segment columns: list them in evaluation.segments"
    if any(name in names for names in FAIRNESS_METRICS.values()) and not sensitive:
        return (
            f"{name!r} is reported only with sensitive columns: list them in evaluation.sensitive"
        )
    other = next((t for t, names in TASK_METRICS.items() if name in names and t != task), None)
    other = other or next(
        (t for t, names in FAIRNESS_METRICS.items() if name in names and t != task), None
    )
    if other is not None and task is not None:
        return f"{name!r} is a {other} metric and this is a {task} pipeline"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    what = f"a {task} pipeline" if task else "a pipeline"
    return f"unknown metric {name!r}{hint}; {what} reports: {', '.join(known)}"


# -- callables and models -----------------------------------------------------------------------


def _split_import_path(path: str) -> tuple[str, str]:
    """(module, attribute) of ``pkg.mod:name``, ``file.py:name`` or ``pkg.mod.name``."""
    if ":" in path:
        mod, _, attr = path.partition(":")
    else:
        mod, _, attr = path.rpartition(".")
    return mod, attr


def _check_import_path(path: str) -> None:
    mod, attr = _split_import_path(path)
    if not mod or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{path!r} is not an import path like 'pkg.module:name'")


def resolve_callable(
    path: str | Callable[..., Any], base_dir: str | os.PathLike[str] | None = None
) -> Callable[..., Any]:
    """The object an import path names: ``pkg.mod:name``, ``pkg.mod.name`` or ``file.py:name``
    (a file relative to ``base_dir``); a callable is returned as is. A module whose source file
    changed since it was imported is imported again. ``InvalidInput`` names what cannot be
    found."""
    if not isinstance(path, str):
        if not callable(path):
            raise InvalidInput(f"{path!r} is not callable")
        return path
    mod_name, attr = _split_import_path(path)
    try:
        if mod_name.endswith(".py"):
            file = Path(base_dir or ".") / mod_name
            module = _module_from_file(file.resolve())
        else:
            module = _fresh_module(importlib.import_module(mod_name))
    except (ImportError, OSError, SyntaxError) as exc:
        raise InvalidInput(f"cannot import {mod_name!r} (from {path!r}): {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidInput(f"{mod_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidInput(f"{path!r} is not callable")
    return obj  # type: ignore[no-any-return]


#: Attribute set on a module resolved here: sha256 of the source it was executed from.
_SOURCE_ATTR = "__modelloop_source_sha256__"
#: Attribute set on a module loaded from a user's ``file.py`` (another such file may replace it).
_USER_ATTR = "__modelloop_user_file__"


def _sha256_file(file: str | os.PathLike[str]) -> str | None:
    try:
        with open(file, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _fresh_module(module: Any) -> Any:
    """``module``, imported again when its source file no longer matches the source it was
    imported from (a long-running process would otherwise keep old code)."""
    file = getattr(module, "__file__", None)
    if not file or not str(file).endswith(".py"):
        return module
    current = _sha256_file(file)
    known = getattr(module, _SOURCE_ATTR, None)
    if known is None:
        setattr(module, _SOURCE_ATTR, current)
    elif current is not None and current != known:
        module = importlib.reload(module)
        setattr(module, _SOURCE_ATTR, current)
    return module


def _names_another_module(name: str, file: Path) -> bool:
    """Whether ``name`` is a standard or installed module other than ``file`` itself."""
    if name in sys.stdlib_module_names:
        return True
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    origin = getattr(found, "origin", None)
    return found is not None and not (origin and Path(origin).resolve() == file.resolve())


def _module_from_file(file: Path) -> Any:
    """The module of a user's ``.py`` file, under its own name (``flights_model.py`` →
    ``flights_model``) so classes defined there keep a stable, importable name; executed again
    whenever the file's content changes."""
    name = file.stem
    if not name.isidentifier():
        raise OSError(f"{file.name} is not a valid Python module name")
    if name not in sys.modules and _names_another_module(name, file):
        # a user file must not stand in for a library imported later (shap.py, pickle.py)
        raise OSError(f"{file.name} has the name of the installed module {name!r}; rename the file")
    try:
        source = file.read_bytes()
    except OSError:
        raise OSError(f"no such file: {file}") from None
    digest = hashlib.sha256(source).hexdigest()
    current = sys.modules.get(name)
    if current is not None:
        current_file = getattr(current, "__file__", None)
        same_file = current_file is not None and Path(current_file).resolve() == file
        if not same_file and not getattr(current, _USER_ATTR, False):
            raise OSError(
                f"{file.name} has the name of the module {name!r} already imported from "
                f"{current_file or 'a built-in'}; rename the file"
            )
        if same_file and getattr(current, _SOURCE_ATTR, None) == digest:
            return current
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise OSError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    setattr(module, _SOURCE_ATTR, digest)
    setattr(module, _USER_ATTR, True)
    sys.modules[name] = module
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # the bytes digested above
    except BaseException:
        if current is not None:
            sys.modules[name] = current
        else:
            del sys.modules[name]
        raise
    return module


def callable_name(obj: str | Callable[..., Any]) -> str:
    """An import path as given, or ``module:qualname`` of a callable (stable across runs)."""
    if isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


#: Distributions whose version is part of every model's code digest.
_CORE_DISTRIBUTIONS = ("scikit-learn", "numpy", "pandas", "scipy")


@functools.cache
def _distributions_of(top: str) -> tuple[str, ...]:
    from importlib import metadata

    return tuple(sorted(set(metadata.packages_distributions().get(top, ()))))


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def code_digest(obj: Any) -> str:
    """sha256 of the source defining ``obj`` (the source its module was executed from), the
    version of the distribution it comes from, and the versions of scikit-learn, numpy, pandas
    and scipy: a change to user code, or an upgrade of a library, changes it."""
    module = inspect.getmodule(obj)
    name = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
    h = hashlib.sha256(name.encode())
    known = getattr(module, _SOURCE_ATTR, None) if module is not None else None
    if known is not None:
        h.update(known.encode())
    else:
        file = None
        try:
            file = inspect.getsourcefile(module) if module is not None else None
        except TypeError:
            file = None
        if file and os.path.isfile(file):
            h.update(Path(file).read_bytes())
        else:  # defined interactively: its own source where inspect finds it
            with contextlib.suppress(OSError, TypeError):
                h.update(inspect.getsource(obj).encode())
    # what actually runs: a stale import, a lambda or a closure over other values is told apart
    h.update(_loaded_code(obj).encode())
    top = (getattr(module, "__name__", "") or "").split(".")[0]
    installed = any(
        part in ("site-packages", "dist-packages")
        for part in Path(getattr(module, "__file__", None) or "").parts
    )
    # the import name is not always the distribution's name (sklearn: scikit-learn); looking
    # it up scans every installed distribution, so only for installed code
    dists = _distributions_of(top) if top and installed else ()
    for dist in sorted({*dists, *_CORE_DISTRIBUTIONS}):
        h.update(f"\0{dist}=={_version(dist)}".encode())
    return h.hexdigest()


def _code_fingerprint(code: Any) -> str:
    """The bytecode, names and constants of a code object (nested ones included), without
    file names or line numbers, so a copied project hashes the same."""
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames)]
    for const in code.co_consts:
        parts.append(_code_fingerprint(const) if inspect.iscode(const) else repr(const))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _loaded_code(obj: Any) -> str:
    """A fingerprint of the code of ``obj`` as loaded in this process, with its defaults and
    the values its closure captured (a function or each function of a class)."""
    functions: list[Any] = []
    if inspect.isclass(obj):
        functions = [v for _, v in sorted(vars(obj).items()) if inspect.isfunction(v)]
    elif inspect.isfunction(obj):
        functions = [obj]
    parts = []
    for fn in functions:
        parts.append(_code_fingerprint(fn.__code__))
        parts.append(repr(fn.__defaults__) + repr(fn.__kwdefaults__))
        for cell in fn.__closure__ or ():
            try:
                parts.append(repr(cell.cell_contents))
            except ValueError:  # an empty cell
                parts.append("<empty>")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def spec_document(spec: PipelineSpec) -> dict[str, Any]:
    """The resolved spec as JSON-ready data (callables given in Python by ``module:qualname``)."""
    data = spec.model_dump(mode="python")
    data["model"]["estimator"] = callable_name(spec.model.estimator)
    if spec.data.callable is not None:
        data["data"]["callable"] = callable_name(spec.data.callable)
    return json.loads(json.dumps(data, default=str))


def build_model(
    model_spec: ModelSpec | Mapping[str, Any],
    params_override: Mapping[str, Any] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """A fresh, unfitted estimator: the ``estimator`` import path called with ``params`` updated
    by ``params_override``. Accepts a :class:`ModelSpec` or a plain mapping
    ``{"estimator": path, "params": {...}, "base_dir": dir}`` (picklable, for worker processes)."""
    if isinstance(model_spec, ModelSpec):
        path, params = model_spec.estimator, dict(model_spec.params)
    else:
        path = model_spec["estimator"]
        params = dict(model_spec.get("params") or {})
        base_dir = base_dir or model_spec.get("base_dir")
    params.update(params_override or {})
    factory = resolve_callable(path, base_dir)
    path = callable_name(path)
    try:
        model = factory(**params)
    except TypeError as exc:
        raise InvalidInput(f"model.params: {path} does not accept these params: {exc}") from None
    if not (hasattr(model, "fit") and hasattr(model, "predict")):
        raise InvalidInput(
            f"model.estimator: {path} returned {type(model).__name__}, not an estimator"
        )
    return model
