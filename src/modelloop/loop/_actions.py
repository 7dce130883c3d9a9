"""The controller's actions done with a client and the model's pipeline file: retrain (the
pipeline on the labelled served rows, registered as ``challenger`` and gated against
``champion``) and score a version on labelled rows."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, ModelloopError
from modelloop.loop._controller import ATTEMPT_TAG, RetrainOutcome
from modelloop.loop._policy import REGRESSION_METRICS

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client

__all__ = ["PipelineActions", "training_frame"]

#: Columns the prediction log adds around a request's inputs; never training features.
_LOG_ONLY = ("request_id", "model_name", "model_version", "route", "prediction", "latency_ms")


def training_frame(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """Labelled served rows as training data: the inputs, ``timestamp`` (for a time split) and
    the label under the pipeline's target name."""
    keep = [
        c
        for c in rows.columns
        if c not in _LOG_ONLY and not str(c).startswith("proba_") and c != "label"
    ]
    frame = rows[keep].copy()
    frame[target] = rows["label"].to_numpy()
    return frame


class PipelineActions:
    """Retrain with the model's pipeline file; score with the registry's packages."""

    def __init__(
        self,
        client: Client,
        pipeline_file: str | os.PathLike[str],
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from modelloop.pipeline._spec import load_spec

        self.client = client
        self.file = Path(pipeline_file)
        self.spec = load_spec(self.file)
        if self.spec.register is None:
            raise InvalidInput(f"{self.file.name}: the loop needs a 'register' section")
        self.overrides = dict(overrides or {})

    def retrain(
        self, *, attempt: str, data: Path | None, with_source: bool = False
    ) -> RetrainOutcome:
        import pandas as pd

        from modelloop.pipeline import Pipeline
        from modelloop.pipeline._schema import DataValidationError

        assert self.spec.register is not None
        raw = self.spec.model_dump(exclude_unset=True, exclude={"loop"})
        raw["register"] = {
            **raw.get("register", {}),
            "alias": "challenger",
            "compare_with": "champion",
            "tags": {**self.spec.register.tags, ATTEMPT_TAG: attempt},
        }
        if data is not None:
            rows = pd.read_parquet(data)
            frame = training_frame(rows, self.spec.target)
            if with_source:
                # the pipeline's own rows have no serving time: one random split over both
                own = self._own_data()
                frame = pd.concat([own, frame[[c for c in frame.columns if c in own.columns]]])
                raw["split"] = {"method": "random", "test_size": 0.2, "seed": 0}
            else:
                raw["split"] = {"method": "time", "column": "timestamp", "fraction": 0.2}
            file = data.with_name(data.stem + "-train.parquet")
            frame.to_parquet(file, index=False)
            raw["data"] = {"path": str(file.resolve())}
        try:
            pipeline = Pipeline(
                raw,
                overrides=self.overrides,
                base_dir=self.file.resolve().parent,
                source=f"{self.file.name} (loop retrain)",
            )
            result = pipeline.run(self.client)
        except DataValidationError as exc:
            return RetrainOutcome(None, "validation_failed", str(exc))
        except ModelloopError as exc:
            return RetrainOutcome(None, "failed", str(exc))
        load = self.client.store.get_run(result.step("load").run_id)
        evidence = {
            "gates": list(result.gates),
            "metrics": dict(result.metrics),
            "training_rows": int(load.tags.get("modelloop.rows", 0)),
        }
        return RetrainOutcome(
            result.registered_version,
            result.status,
            result.reason,
            result.run_id,
            evidence,
        )

    def _own_data(self) -> pd.DataFrame:
        """The pipeline's own data source, read as its load step reads it."""
        from modelloop.pipeline._steps import load_source

        return load_source(self.spec, self.file.resolve().parent)

    def score(self, version: int, rows: pd.DataFrame, metric: str) -> float | None:
        import numpy as np
        from sklearn import metrics as skm

        assert self.spec.register is not None
        model = self.client.load_model(f"models:/{self.spec.register.model_name}/{version}")
        signature = model.signature
        X = rows[signature.columns] if signature is not None else rows
        y = rows["label"].to_numpy()
        if metric in REGRESSION_METRICS:
            err = np.asarray(model.predict(X), dtype=float) - y.astype(float)
            value = np.abs(err).mean() if metric == "mae" else math.sqrt((err**2).mean())
            return float(value)
        if metric in ("accuracy", "f1"):
            pred = np.asarray(model.predict(X)).astype(str)
            if metric == "accuracy":
                return float((pred == y.astype(str)).mean())
            return float(skm.f1_score(y.astype(str), pred, average="macro"))
        classes = list(signature.classes or ()) if signature is not None else []
        if len(classes) != 2 or len(set(y.astype(str).tolist())) < 2:
            return None
        positive = np.asarray(model.predict_proba(X))[:, 1]
        return float(skm.roc_auc_score(y.astype(str) == str(classes[1]), positive))
