"""Running a pipeline: load → validate → split → (tune →) train → evaluate → explain → gate →
register, each step a child run of one pipeline run, cached by the digest of its inputs, code and
parameters."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, ModelloopError, NotFound
from modelloop.pipeline import _cache as cache
from modelloop.pipeline._spec import (
    PipelineSpec,
    callable_name,
    code_digest,
    load_spec,
    parse_spec,
    spec_document,
)
from modelloop.pipeline._steps import (
    SOFT_COUNT_TAG,
    SOFT_TAG,
    STEPS,
    gate_failure_reason,
    jsonable,
    metric_list,
    read_frame_bytes,
    soft_problems,
)

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.pipeline._schema import DataSchema
    from modelloop.store import ModelVersion

__all__ = ["Pipeline", "PipelineResult", "StepEvent", "StepRecord"]

#: Cache key of validation against the run's own training part (no champion yet).
SELF_REFERENCE = "self"


@dataclass(frozen=True)
class StepRecord:
    """What one step did: its run, digest, whether it came from the cache, and how long it
    took."""

    name: str
    run_id: str
    digest: str
    cache_hit: bool
    seconds: float
    status: str = "FINISHED"
    cached_from: str | None = None
    output_digest: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """The outcome of a pipeline run: step records, gate results, and the registered version or
    the reason nothing was registered."""

    name: str
    run_id: str
    experiment: str
    #: "registered"; "held" (registered, the alias not moved: soft validation problems under
    #: ``validation.on_soft: hold``); "unchanged" (the registry already holds this model:
    #: ``duplicate_of``); "gates_passed" (no register section); "gate_failed";
    #: "validation_failed"; "failed"
    status: str
    steps: tuple[StepRecord, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    gates: tuple[dict[str, Any], ...] = ()
    gates_passed: bool | None = None
    model_name: str | None = None
    alias: str | None = None
    registered_version: int | None = None
    #: with ``register.onnx``: ``converted``, ``reason`` (when declined) and ``check_rows``
    onnx: dict[str, Any] | None = None
    reason: str | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    #: the registered version this model is the same as (status "unchanged")
    duplicate_of: int | None = None
    #: whether the alias now points at ``registered_version``
    alias_moved: bool = False
    #: the data validation: ``reference`` (what the data was checked against, None when not
    #: checked), ``policy`` (``validation.on_soft``) and ``soft`` (one line per soft problem)
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the pipeline finished and every gate passed."""
        return self.status in ("registered", "held", "unchanged", "gates_passed")

    @property
    def soft_problems(self) -> tuple[str, ...]:
        """The soft validation problems of the data, one line each."""
        return tuple(self.validation.get("soft", ()))

    def step(self, name: str) -> StepRecord:
        """The record of one step (``KeyError`` if it did not run)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        out: dict[str, Any] = jsonable(self)
        out["ok"] = self.ok
        return out


#: Called as ``on_step(event)`` when a step starts and ends.
@dataclass(frozen=True)
class StepEvent:
    """A progress event: ``state`` is "start", "done" or "failed"; ``record`` set when done."""

    step: str
    index: int
    total: int
    state: str
    record: StepRecord | None = None


class RunContext:
    """State shared by the steps of one pipeline run."""

    def __init__(
        self,
        pipeline: Pipeline,
        client: Client,
        *,
        workers: int | None,
        executor: str = "local",
        ray_address: str | None = None,
    ) -> None:
        spec = pipeline.spec
        self.spec = spec
        self.base_dir = pipeline.base_dir
        self.client = client
        self.workers = workers
        self.executor = executor
        self.ray_address = ray_address
        self.memory: dict[str, Any] = {}
        self.step_runs: dict[str, str] = {}
        self.step_tags: dict[str, dict[str, str]] = {}
        self.output_digests: dict[str, str] = {}
        self.pending_tags: dict[str, Any] = {}
        self.current_run_id = ""
        self.parent_run_id = ""
        self.features = list(spec.features or [])  # without features: set by the load step
        self.task: str = spec.task or "classification"
        roles: dict[str, str] = {spec.target: "target"}
        for col in spec.evaluation.segments:
            roles.setdefault(col, "evaluation.segments")
        for col in spec.evaluation.sensitive:
            roles.setdefault(col, "evaluation.sensitive")
        if spec.split.column:
            roles.setdefault(spec.split.column, "split.column")
        self.column_roles = roles
        self.reference_schema: DataSchema | None = None
        #: "schema" (declared or the champion's), "self" (no champion) or "off"
        self.reference_mode = "off"
        self.reference_label: str | None = None
        self.reference_key: str | None = None
        self.champion: ModelVersion | None = None
        self.champion_key: str | None = None
        self.model_factory: dict[str, Any] = {}
        self.tune_metric = ""
        self.tune_direction = "maximize"
        self.notes: list[str] = []
        self._artifacts: dict[str, dict[str, Any]] = {}

    @property
    def used_columns(self) -> list[str]:
        """Features, target, segment, sensitive and split columns, each once."""
        s = self.spec
        cols = [*self.features, s.target, *s.evaluation.segments, *s.evaluation.sensitive]
        if s.split.column:
            cols.append(s.split.column)
        return list(dict.fromkeys(cols))

    @property
    def used_roles(self) -> dict[str, str]:
        """Each used column and the spec field that names it (``features`` for a feature)."""
        return {c: self.column_roles.get(c, "features") for c in self.used_columns}

    def _blob(self, step: str, name: str) -> bytes:
        run_id = self.step_runs[step]
        items = self._artifacts.get(run_id)
        if items is None:
            items = {a.path: a for a in self.client.list_artifacts(run_id)}
            self._artifacts[run_id] = items
        item = items.get(f"outputs/{name}")
        if item is None:
            raise NotFound(f"step {step} (run {run_id}) has no output {name}")
        return self.client.artifacts.read_bytes(item.digest)

    def frame(self, step: str, name: str, key: str) -> pd.DataFrame:
        """An upstream frame: from memory, else from the step run's Parquet artifact."""
        if key not in self.memory:
            self.memory[key] = read_frame_bytes(self._blob(step, name))
        return self.memory[key]  # type: ignore[no-any-return]

    def json(self, step: str, name: str, key: str) -> Any:
        """An upstream JSON output: from memory, else from the step run's artifact."""
        if key not in self.memory:
            self.memory[key] = json.loads(self._blob(step, name))
        return self.memory[key]

    def model(self) -> Any:
        """The fitted candidate: from memory, else loaded from the train step's package."""
        if "model" not in self.memory:
            package = self.client.load_model(f"runs:/{self.step_runs['train']}/model")
            self.memory["model"] = package.model
        return self.memory["model"]


class Pipeline:
    """A training pipeline from a spec: ``Pipeline.from_file("modelloop.yaml")``,
    ``Pipeline({...})`` or ``Pipeline(PipelineSpec(...))``; then :meth:`run`.

    Paths in the spec (data files, ``file.py:fn`` callables, schema files) are relative to
    ``base_dir`` (the pipeline file's folder; default the current directory).
    """

    def __init__(
        self,
        spec: PipelineSpec | Mapping[str, Any],
        *,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        base_dir: str | os.PathLike[str] | None = None,
        source: str = "pipeline",
    ) -> None:
        self.spec: PipelineSpec = parse_spec(spec, overrides=overrides, source=source)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.source = source

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        overrides: Sequence[str] | Mapping[str, Any] = (),
    ) -> Pipeline:
        """Read ``modelloop.yaml`` (with ``--set``-style overrides) into a pipeline."""
        p = Path(path)
        spec = load_spec(p, overrides)
        return cls(spec, base_dir=p.resolve().parent, source=p.name)

    @property
    def step_names(self) -> list[str]:
        """The steps this spec runs, in order."""
        names = ["load", "validate", "split"]
        if self.spec.tuning:
            names.append("tune")
        names += ["train", "evaluate"]
        if self.spec.explain.enabled:
            names.append("explain")
        names.append("gate")
        if self.spec.register is not None:
            names.append("register")
        return names

    def run(
        self,
        client: Client | None = None,
        *,
        no_cache: bool = False,
        workers: int | None = None,
        on_step: Callable[[StepEvent], None] | None = None,
        executor: str = "local",
        ray_address: str | None = None,
    ) -> PipelineResult:
        """Run every step (cache hits reuse earlier step runs unless ``no_cache``) and return
        the outcome. A data validation failure raises
        :class:`~modelloop.pipeline._schema.DataValidationError` after recording the failed
        pipeline run; a failed gate does not raise: the result says why nothing was
        registered. ``executor`` (``local`` or ``ray``, with ``ray_address``) is where the
        tuning workers run; it is not part of any step's cache key."""
        from modelloop._client import default_client

        client = client or default_client()
        started = time.perf_counter()
        ctx = RunContext(self, client, workers=workers, executor=executor, ray_address=ray_address)
        self._prepare(ctx)
        spec = self.spec
        names = self.step_names
        notify = on_step or (lambda _e: None)
        exp = client.store.get_or_create_experiment(spec.experiment_name)
        records: list[StepRecord] = []
        status, reason = "failed", None
        with client.start_run(
            spec.experiment_name,
            name=spec.name,
            tags={cache.PIPELINE_TAG: spec.name, "modelloop.pipeline_steps": ",".join(names)},
            flush_interval=0,
        ) as parent:
            ctx.parent_run_id = parent.run_id
            self._log_spec(ctx)
            try:
                for i, name in enumerate(names):
                    notify(StepEvent(name, i, len(names), "start"))
                    try:
                        rec = self._run_step(ctx, exp.experiment_id, name, no_cache=no_cache)
                    except BaseException:
                        notify(StepEvent(name, i, len(names), "failed"))
                        raise
                    records.append(rec)
                    notify(StepEvent(name, i, len(names), "done", rec))
            except Exception as exc:
                from modelloop.pipeline._schema import DataValidationError

                status = "validation_failed" if isinstance(exc, DataValidationError) else "failed"
                parent.set_tag("modelloop.pipeline_status", status)
                raise
            evaluation = ctx.json("evaluate", "evaluation.json", "evaluation")
            gates = ctx.json("gate", "gates.json", "gates")
            metrics = {
                k: float(v)
                for k, v in evaluation.get("metrics", {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            version = duplicate = None
            onnx = None
            moved = False
            validation = _validation_summary(ctx)
            if gates["passed"]:
                status = "gates_passed"
                if spec.register is not None:
                    reg = ctx.json("register", "register.json", "register")
                    onnx = reg.get("onnx")
                    if reg.get("registered"):
                        version = reg.get("version")
                        status = "held" if reg.get("held") else "registered"
                        reason = reg.get("held")
                        moved = bool(reg.get("alias_moved", reg.get("alias")))
                        if records[-1].cache_hit and moved:
                            self._reapply_alias(ctx, version)
                    else:
                        status, reason = "unchanged", reg.get("reason")
                        duplicate = reg.get("duplicate_of")
                else:
                    reason = "no register section: nothing registered"
            else:
                status = "gate_failed"
                reason = gate_failure_reason(gates)
            soft = validation.get("soft", [])
            parent.set_tags(
                {
                    "modelloop.pipeline_status": status,
                    **({"modelloop.registered_version": version} if version else {}),
                    **({"modelloop.duplicate_of": duplicate} if duplicate else {}),
                    **({"modelloop.pipeline_notes": "\n".join(ctx.notes)} if ctx.notes else {}),
                    SOFT_COUNT_TAG: str(len(soft)),
                    **({SOFT_TAG: "\n".join(soft[:20])} if soft else {}),
                }
            )
            client.store.log_metrics(parent.run_id, metric_list(metrics))
        return PipelineResult(
            name=spec.name,
            run_id=parent.run_id,
            experiment=spec.experiment_name,
            status=status,
            steps=tuple(records),
            metrics=metrics,
            gates=tuple(gates["results"]),
            gates_passed=bool(gates["passed"]),
            model_name=spec.register.model_name if spec.register else None,
            alias=spec.register.alias if spec.register else None,
            registered_version=version,
            onnx=onnx,
            reason=reason,
            seconds=time.perf_counter() - started,
            notes=tuple(ctx.notes),
            duplicate_of=duplicate,
            alias_moved=moved,
            validation=validation,
        )

    def _log_spec(self, ctx: RunContext) -> None:
        """Store the resolved spec (after overrides) as ``spec.json`` of the pipeline run."""
        with tempfile.TemporaryDirectory(prefix="modelloop-spec-") as tmp:
            path = Path(tmp) / "spec.json"
            path.write_text(
                json.dumps(spec_document(self.spec), indent=2, sort_keys=True), encoding="utf-8"
            )
            ctx.client.log_artifact(ctx.parent_run_id, path)

    def _reapply_alias(self, ctx: RunContext, version: int | None) -> None:
        """A reused register step moved the alias once; if it was moved since (e.g. a manual
        rollback), point it at the candidate again, as the step's record says, and note it."""
        reg = self.spec.register
        if reg is None or not reg.alias or version is None:
            return
        try:
            current = ctx.client.resolve(f"models:/{reg.model_name}@{reg.alias}").version
        except NotFound:
            current = None
        if current != version:
            ctx.client.set_alias(reg.model_name, reg.alias, version)
            was = f"v{current}" if current is not None else "nothing"
            ctx.notes.append(
                f"@{reg.alias} pointed at {was}; moved it back to v{version} (cached register)"
            )

    # -- preparation ------------------------------------------------------------------------

    def _prepare(self, ctx: RunContext) -> None:
        """Check everything that can be checked before any step runs (every problem reported
        at once, see ``_preflight``), then that the artifact root can be written
        (``StoreError``); set the task, the model code digest, the tuning metric and the
        champion."""
        from modelloop.pipeline._preflight import check_before_run

        spec, source = self.spec, self.source
        factory, ctx.task = check_before_run(spec, self.base_dir, source)
        ctx.client.artifacts.check_writable()  # a missing bucket, before hours of training
        estimator: Any = spec.model.estimator
        if isinstance(estimator, str):
            module, sep, attr = estimator.partition(":")
            if sep and module.endswith(".py"):  # absolute, so worker processes find it
                estimator = f"{(self.base_dir / module).resolve()}:{attr}"
        else:
            estimator = _importable(estimator, needed=spec.tuning, source=source)
        ctx.model_factory = {"estimator": estimator, "base_dir": str(self.base_dir)}
        ctx.memory["_model_code"] = code_digest(factory)
        if spec.tune is not None:
            from modelloop.pipeline._tune import METRICS

            default = "auc" if ctx.task == "classification" else "rmse"
            ctx.tune_metric = spec.tune.metric or default
            ctx.tune_direction = spec.tune.direction or METRICS[ctx.tune_metric][1]
        reg = spec.register
        if reg is not None and reg.champion_alias:
            try:
                ctx.champion = ctx.client.resolve(f"models:/{reg.model_name}@{reg.champion_alias}")
            except NotFound:
                ctx.champion = None

    # -- one step -----------------------------------------------------------------------------

    def _params(self, ctx: RunContext, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        """(parameters, upstream step names → output digests) of a step."""
        s = self.spec
        up = ctx.output_digests
        model = {
            "spec": {"estimator": callable_name(s.model.estimator), "params": s.model.params},
            "code": ctx.memory["_model_code"],
        }
        cols = {"features": ctx.features, "target": s.target, "task": ctx.task}
        if name == "load":
            p = {
                "data": {**s.data.model_dump(), "callable": callable_name(s.data.callable or "")},
                "source": self._source_key(ctx),
                "default_features": s.features is None and sorted(ctx.column_roles),
            }
            return p, {}
        if name == "validate":
            p = {
                "validation": s.validation.model_dump(),
                "columns": ctx.used_columns,
                "reference": ctx.reference_key,
                "mode": ctx.reference_mode,
            }
            if ctx.reference_mode == "self":  # the test part is checked against the train part
                p["split"] = {"split": s.split.model_dump(), "target": s.target}
            return p, {"load": up["load"]}
        if name == "split":
            p = {"split": s.split.model_dump(), "columns": ctx.used_columns, **cols}
            return p, {"load": up["load"]}
        if name == "tune":
            assert s.tune is not None
            tune = s.tune.model_dump(exclude={"workers"})
            p = {"tune": tune, "model": model, "split": s.split.model_dump(), **cols}
            if s.tune.study:
                # The study shared under this name is the one for exactly this problem: the
                # split's data, columns, model and code, search space and metric (the budget
                # aside, so raising n_trials goes on with the same study). Anything else gets
                # a study of its own instead of reusing stale trials.
                problem = {k: v for k, v in p.items() if k != "tune"}
                problem["tune"] = {
                    k: v for k, v in tune.items() if k not in ("n_trials", "timeout", "study")
                }
                problem["split_output"] = up["split"]
                key = hashlib.sha256(
                    json.dumps(problem, sort_keys=True, default=str).encode()
                ).hexdigest()[:12]
                ctx.memory["study_name"] = f"{s.tune.study}-{key}"
                # a shared study goes on where it is: never a cache hit
                p["shared_study"] = uuid.uuid4().hex
            return p, {"split": up["split"]}
        if name == "train":
            inputs = {"split": up["split"]}
            if s.tuning:
                inputs["tune"] = up["tune"]
            return {"model": model, **cols}, inputs
        if name == "evaluate":
            p = {"evaluation": s.evaluation.model_dump(), **cols}
            return p, {"train": up["train"], "split": up["split"]}
        if name == "explain":
            p = {"explain": s.explain.model_dump(), **cols}
            return p, {"train": up["train"], "split": up["split"]}
        if name == "gate":
            p = {
                "gates": list(s.gates),
                "evaluation": s.evaluation.model_dump(),
                "champion": ctx.champion_key,
                **cols,
            }
            return p, {"evaluate": up["evaluate"], "split": up["split"]}
        if name == "register":
            assert s.register is not None
            p = {"register": s.register.model_dump(), "on_soft": s.validation.on_soft}
            inputs = {k: up[k] for k in ("load", "validate", "train", "gate")}
            return p, inputs
        raise InvalidInput(f"unknown step {name!r}")

    def _source_key(self, ctx: RunContext) -> Any:
        """What identifies the data: file content, callable code, or query (``cache: false``:
        a fresh key every run)."""
        src = self.spec.data
        if not src.cached:
            return uuid.uuid4().hex
        if src.path:
            from modelloop.pipeline._preflight import data_location, open_data

            location = data_location(self.base_dir, src.path)
            try:
                with open_data(location) as fh:
                    return hashlib.file_digest(fh, "sha256").hexdigest()
            except FileNotFoundError:
                raise InvalidInput(f"{self.source}: data.path: no such file {location}") from None
        if src.callable:
            from modelloop.pipeline._spec import resolve_callable

            return code_digest(resolve_callable(src.callable, self.base_dir))
        return {"sql": src.sql, "url": src.url}

    def _before_step(self, ctx: RunContext, name: str) -> None:
        if name == "validate":
            self._reference(ctx)
        if name == "gate":
            self._champion_key(ctx)

    def _reference(self, ctx: RunContext) -> None:
        """What new data is checked against (``ctx.reference_mode``: ``schema`` — a declared
        schema or the champion's —, ``self`` — no champion: this run's test part against its
        own training part — or ``off``), and its cache key."""
        from modelloop.pipeline._schema import DataSchema

        ref = self.spec.validation.reference
        if not self.spec.validation.enabled or ref == "none":
            ctx.reference_mode = "off"
            return
        if ref != "champion":
            path = self.base_dir / ref
            if not path.is_file():
                raise InvalidInput(f"{self.source}: validation.reference: no such file {path}")
            text = path.read_text(encoding="utf-8")
            self._use_schema(ctx, DataSchema.from_dict(json.loads(text)), ref, None)
            return
        ctx.reference_mode, ctx.reference_key = "self", SELF_REFERENCE
        ctx.reference_label = "the training part of this run's data"
        champ = ctx.champion
        if champ is None:
            ctx.reference_label += " (no champion yet)"
            return
        if "modelloop.schema_run" not in champ.tags:
            ctx.notes.append(
                f"data not validated against the champion: {champ.name} v{champ.version} has no "
                "stored schema (registered outside a pipeline), so the test part was checked "
                "against the training part instead; set validation.reference to a schema file"
            )
            return
        run_id = champ.tags["modelloop.schema_run"]
        items = {a.path: a for a in ctx.client.list_artifacts(run_id, "outputs")}
        if champ.tags.get("modelloop.schema_data_digest") == ctx.output_digests["load"]:
            # the champion was trained on exactly this data: check it as the champion's was
            # checked (same reference, same cache key), not against the schema inferred from it
            key = champ.tags.get("modelloop.validate_reference_key", "none")
            if key in ("none", SELF_REFERENCE):
                return
            item = items.get("outputs/validation.json")
            stored = json.loads(ctx.client.artifacts.read_bytes(item.digest)) if item else {}
            if stored.get("reference_schema"):
                schema = DataSchema.from_dict(stored["reference_schema"])
                self._use_schema(ctx, schema, str(stored.get("reference")), key)
            return
        item = items.get("outputs/schema.json")
        if item is None:
            return
        reg = self.spec.register
        alias = None if reg is None else reg.champion_alias
        schema = DataSchema.from_dict(json.loads(ctx.client.artifacts.read_bytes(item.digest)))
        label = f"{champ.name} v{champ.version} ({alias})"
        key = champ.tags.get("modelloop.schema_digest") or item.digest
        self._use_schema(ctx, schema, label, key)

    @staticmethod
    def _use_schema(ctx: RunContext, schema: DataSchema, label: str, key: str | None) -> None:
        ctx.reference_mode = "schema"
        ctx.reference_schema = schema
        ctx.reference_label = label
        ctx.reference_key = key or schema.digest()

    def _champion_key(self, ctx: RunContext) -> None:
        """The champion's identity for the gate's cache key: its package digest, or — when the
        champion is this very candidate — the key its own gates were computed with."""
        from modelloop._client import PACKAGE_TAG, _manifest_digest

        champ = ctx.champion
        if champ is None:
            return
        items = ctx.client.list_artifacts(ctx.step_runs["train"], "model")
        candidate = _manifest_digest("model", items) if items else None
        if champ.tags.get(PACKAGE_TAG) == candidate:
            key = champ.tags.get("modelloop.gate_champion_key", "none")
            ctx.champion_key = None if key == "none" else key
            if ctx.champion_key is None:
                ctx.champion = None  # compared with nothing when it was registered
            else:
                ctx.champion = self._version_by_package(ctx, champ.name, ctx.champion_key)
            return
        ctx.champion_key = champ.tags.get(PACKAGE_TAG) or f"{champ.name}/{champ.version}"

    @staticmethod
    def _version_by_package(ctx: RunContext, name: str, package: str) -> ModelVersion | None:
        from modelloop._client import PACKAGE_TAG

        for mv in reversed(ctx.client.list_model_versions(name)):
            if mv.tags.get(PACKAGE_TAG) == package:
                return mv
        return None

    def _run_step(
        self, ctx: RunContext, experiment_id: int, name: str, *, no_cache: bool
    ) -> StepRecord:
        started = time.perf_counter()
        client = ctx.client
        self._before_step(ctx, name)
        fn = STEPS[name]
        params, inputs = self._params(ctx, name)
        code = cache.step_code_digest(fn, _STEP_MODULES[name])
        digest = cache.step_digest(name, code, params, inputs)
        lineage = {k: ctx.step_runs[k] for k in inputs}
        hit = None if no_cache else cache.find_cached(client, experiment_id, digest)
        run = client.start_run(
            self.spec.experiment_name,
            name=f"{self.spec.name}/{name}",
            tags={
                cache.PARENT_TAG: ctx.parent_run_id,
                cache.PIPELINE_TAG: self.spec.name,
                cache.STEP_TAG: name,
                cache.STEP_DIGEST_TAG: digest,
                cache.CACHE_HIT_TAG: "true" if hit else "false",
                cache.INPUTS_TAG: json.dumps(lineage, sort_keys=True),
            },
            flush_interval=0,
        )
        ctx.current_run_id = run.run_id
        ctx.step_runs[name] = run.run_id
        with run:
            if hit is not None:
                items = client.store.list_run_artifacts(hit.run_id, "")
                from modelloop.store import RunArtifact

                client.store.log_run_artifacts(
                    [RunArtifact(run.run_id, a.path, a.digest, a.size) for a in items]
                )
                out_digest = hit.tags.get(cache.OUTPUT_DIGEST_TAG) or cache.outputs_digest(items)
                copied = {
                    k: v
                    for k, v in hit.tags.items()
                    if k.startswith("modelloop.") and k not in _OWN_TAGS
                }
                own = {cache.CACHED_FROM_TAG: hit.run_id, cache.OUTPUT_DIGEST_TAG: out_digest}
                run.set_tags({**copied, **own})
                ctx.step_tags[name] = dict(copied)
                if name == "train":
                    ctx.step_runs["train"] = hit.run_id  # the registered package lives there
            else:
                with tempfile.TemporaryDirectory(prefix=f"modelloop-{name}-") as tmp:
                    out = Path(tmp) / "outputs"
                    out.mkdir()
                    ctx.pending_tags = {}
                    try:
                        tags = fn(ctx, out)
                    except ModelloopError:
                        raise
                    except Exception as exc:
                        raise _step_error(name, exc) from exc
                    finally:
                        if any(out.iterdir()):
                            client.log_artifact(run.run_id, out, "outputs")
                        if ctx.pending_tags:
                            run.set_tags(ctx.pending_tags)
                items = client.store.list_run_artifacts(run.run_id, "")
                out_digest = cache.outputs_digest(items)
                tags = {k: str(v) for k, v in (tags or {}).items()}
                run.set_tags({**tags, cache.OUTPUT_DIGEST_TAG: out_digest})
                ctx.step_tags[name] = tags
        ctx._artifacts[run.run_id] = {a.path: a for a in items}  # downstream reads skip a listing
        ctx.output_digests[name] = out_digest
        if name == "load" and self.spec.features is None:  # a cache hit did not run step_load
            ctx.features = json.loads(ctx.step_tags["load"]["modelloop.features"])
        return StepRecord(
            name=name,
            run_id=run.run_id,
            digest=digest,
            cache_hit=hit is not None,
            seconds=time.perf_counter() - started,
            cached_from=hit.run_id if hit is not None else None,
            output_digest=out_digest,
        )


#: Modules (besides the step's own source) whose code decides a step's outputs.
_STEP_MODULES: dict[str, tuple[str, ...]] = {
    "load": ("modelloop.data",),
    "validate": ("modelloop.pipeline._schema",),
    "split": (),
    "tune": ("modelloop.pipeline._tune", "modelloop.pipeline._trials"),
    "train": ("modelloop.models",),
    "evaluate": ("modelloop.pipeline._evaluate",),
    "explain": ("modelloop.pipeline._explain",),
    "gate": ("modelloop.pipeline._gates", "modelloop.pipeline._evaluate"),
    "register": ("modelloop.registry", "modelloop.pipeline._identity"),
}


def _validation_summary(ctx: RunContext) -> dict[str, Any]:
    """What the validate step checked the data against and the soft problems it found."""
    stored = ctx.json("validate", "validation.json", "validation")
    return {
        "reference": stored.get("reference"),
        "policy": ctx.spec.validation.on_soft,
        "soft": soft_problems(stored),
    }


def _importable(obj: Any, *, needed: bool, source: str) -> Any:
    """An import path for a model callable given in Python, so tuning worker processes can
    build it (``file.py:name`` for a callable from a user's file)."""
    import sys

    qualname = getattr(obj, "__qualname__", "")
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if "<locals>" in qualname or module is None or module.__name__ == "__main__":
        if needed:
            raise InvalidInput(
                f"{source}: model.estimator: {qualname or obj!r} is not importable (defined in a "
                "function or in __main__); tuning workers need an import path"
            )
        return obj
    file = getattr(module, "__file__", None)
    if getattr(module, "__modelloop_user_file__", False) and file:
        return f"{file}:{qualname}"
    return f"{module.__name__}:{qualname}"


def _step_error(step: str, exc: Exception) -> ModelloopError:
    """A step's foreign exception (scikit-learn, pandas, SQLAlchemy, user code) as one line
    naming the step; the cause stays chained."""
    text = " ".join(str(exc).split()) or "(no message)"
    message = f"step {step} failed: {type(exc).__name__}: {text}"
    if isinstance(exc, ValueError | TypeError | KeyError):
        return InvalidInput(message)
    return ModelloopError(message)


_OWN_TAGS = {
    cache.PARENT_TAG,
    cache.STEP_TAG,
    cache.STEP_DIGEST_TAG,
    cache.CACHE_HIT_TAG,
    cache.INPUTS_TAG,
    cache.OUTPUT_DIGEST_TAG,
    cache.CACHED_FROM_TAG,
    cache.PIPELINE_TAG,
    "modelloop.error",
}
