"""What the registry and the pipeline stored about one version, gathered once for its model card
and for a comparison with another version.

Nothing here computes a number: everything is read back from the version's tags, its package
(signature and metadata), its training run (params, training dataset) and, for a version a
pipeline registered, the outputs of that pipeline run's steps (``evaluation.json``,
``gates.json``, ``champion_evaluation.json``, ``explanation.json``, ``validation.json``, the
test split). A version registered by hand simply has fewer facts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import ModelloopError, NotFound

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.models import Signature
    from modelloop.store import Dataset, ModelVersion, Run

__all__ = ["VersionFacts", "candidate_facts", "version_facts"]

#: The JSON outputs read from the pipeline's step runs: (step, file) by the name kept here.
_STEP_JSON = {
    "evaluation": ("evaluate", "evaluation.json"),
    "gates": ("gate", "gates.json"),
    "champion_evaluation": ("gate", "champion_evaluation.json"),
    "explanation": ("explain", "explanation.json"),
    "validation": ("validate", "validation.json"),
    "best_params": ("tune", "best_params.json"),
}


@dataclass(frozen=True)
class VersionFacts:
    """Everything stored about one registered version (None or empty where nothing was)."""

    version: ModelVersion
    uri: str  # what loads its package: models:/NAME/VERSION, or runs:/RUN/model for a candidate
    signature: Signature | None
    metadata: Mapping[str, Any]
    run: Run | None
    dataset: Dataset | None
    pipeline_run_id: str | None = None
    spec: Mapping[str, Any] | None = None
    step_runs: Mapping[str, Run] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    onnx: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``name vN``, or ``name candidate`` for a model no version holds."""
        if self.version.version == 0:
            return f"{self.version.name} candidate"
        return f"{self.version.name} v{self.version.version}"

    @property
    def evaluation(self) -> Mapping[str, Any] | None:
        """The pipeline's evaluation of this version on its test split."""
        return self.outputs.get("evaluation")

    @property
    def gates(self) -> Mapping[str, Any] | None:
        """The gate step's ``gates.json``: results and the champion it was gated against."""
        return self.outputs.get("gates")

    @property
    def target(self) -> str | None:
        """The column the model predicts (from the pipeline spec)."""
        return None if self.spec is None else self.spec.get("target")

    @property
    def task(self) -> str | None:
        """``classification`` or ``regression``."""
        task = self.version.tags.get("modelloop.task")
        if task:
            return task
        if self.signature is not None and self.signature.task:
            return self.signature.task
        return None if self.spec is None else self.spec.get("task")

    def test_split(self, client: Client) -> pd.DataFrame | None:
        """The test part the pipeline recorded (every column the spec used), or None."""
        digest = self.test_split_digest(client)
        if digest is None:
            return None
        import io

        import pandas as pd

        return pd.read_parquet(io.BytesIO(client.artifacts.read_bytes(digest)))

    def test_split_digest(self, client: Client) -> str | None:
        """The content digest of the recorded test part (equal digests: the same rows)."""
        run = self.step_runs.get("split")
        return None if run is None else _artifact_digest(client, run.run_id, "outputs/test.parquet")


def _artifact_digest(client: Client, run_id: str, path: str) -> str | None:
    for item in client.list_artifacts(run_id, path.rsplit("/", 1)[0]):
        if item.path == path:
            return item.digest
    return None


def _read_json(client: Client, run_id: str, path: str) -> Any:
    digest = _artifact_digest(client, run_id, path)
    if digest is None:
        return None
    return json.loads(client.artifacts.read_bytes(digest))


def version_facts(client: Client, name: str, version: int) -> VersionFacts:
    """Gather what is stored about ``name`` version ``version`` (``NotFound`` if it does not
    exist). Parts that cannot be read are left out and named in ``notes``."""
    mv = client.get_model_version(name, version)
    return _gather(
        client, mv, f"models:/{name}/{version}", mv.tags.get("modelloop.pipeline_run_id")
    )


def candidate_facts(client: Client, pipeline_run_id: str) -> VersionFacts:
    """What a pipeline run stored about the model it trained, registered or not (a gate may have
    stopped it): its ``version`` is a stand-in numbered 0 whose source is the train step's
    package. ``NotFound`` when the run trained nothing."""
    from modelloop.store import ModelVersion

    parent = client.get_run(pipeline_run_id)
    steps = _step_runs(client, parent.experiment_id, pipeline_run_id)
    if "train" not in steps:
        raise NotFound(f"pipeline run {pipeline_run_id} has no train step")
    train = steps["train"]
    origin = train.tags.get("modelloop.cached_from") or train.run_id  # where its dataset is
    spec = _read_json(client, pipeline_run_id, "spec.json") or {}
    name = (spec.get("register") or {}).get("model_name") or parent.tags.get(
        "modelloop.pipeline", "candidate"
    )
    mv = ModelVersion(
        name=name,
        version=0,
        run_id=origin,
        source=f"runs:/{train.run_id}/model",
        created_at=train.start_time,
        user=train.user,
        description=f"candidate of pipeline run {pipeline_run_id}",
        tags={"modelloop.task": train.tags.get("modelloop.task", "")},
    )
    return _gather(client, mv, mv.source, pipeline_run_id)


def _step_runs(client: Client, experiment_id: int, parent: str) -> dict[str, Run]:
    page = client.store.search_runs(
        [experiment_id], filter=f"tags.`modelloop.parent_run_id` = '{parent}'", max_results=100
    )
    return {r.tags["modelloop.step"]: r for r in page.items if r.tags.get("modelloop.step")}


def _gather(
    client: Client, mv: ModelVersion, uri: str, pipeline_run_id: str | None
) -> VersionFacts:
    from modelloop.models._package import METADATA_FILE, read_signature
    from modelloop.registry._onnx import ONNX_TAG

    notes: list[str] = []
    folder = client.fetch_model(mv if mv.version else uri)
    signature = read_signature(folder)
    metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    run = dataset = None
    if mv.run_id:
        run = client.get_run(mv.run_id)
        train = [d for d in client.store.list_run_datasets(mv.run_id) if d.role == "train"]
        dataset = train[-1].dataset if train else None
    onnx = None
    if mv.tags.get(ONNX_TAG):
        try:
            onnx = json.loads(client.artifacts.read_bytes(mv.tags[ONNX_TAG]))
        except (ModelloopError, ValueError) as exc:
            notes.append(f"the ONNX description is unreadable: {exc}")
    spec = None
    step_runs: dict[str, Run] = {}
    outputs: dict[str, Any] = {}
    if pipeline_run_id:
        try:
            parent = client.get_run(pipeline_run_id)
        except NotFound:
            notes.append(f"the pipeline run {pipeline_run_id} that registered it is gone")
        else:
            spec = _read_json(client, pipeline_run_id, "spec.json")
            step_runs = _step_runs(client, parent.experiment_id, pipeline_run_id)
            for key, (step, file) in _STEP_JSON.items():
                if step in step_runs:
                    value = _read_json(client, step_runs[step].run_id, f"outputs/{file}")
                    if value is not None:
                        outputs[key] = value
    return VersionFacts(
        version=mv,
        uri=uri,
        signature=signature,
        metadata=metadata,
        run=run,
        dataset=dataset,
        pipeline_run_id=pipeline_run_id,
        spec=spec,
        step_runs=step_runs,
        outputs=outputs,
        onnx=onnx,
        notes=tuple(notes),
    )
