"""Shared parts of the loop tests: a small pipeline on scikit-learn's breast cancer data, and
traffic written to the prediction log and feedback exactly as the server writes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL = "bc"

PIPELINE = """\
name: bc
data: {path: train.csv}
target: target
task: classification
split: {method: random, test_size: 0.25, seed: 0}
model:
  estimator: sklearn.ensemble.RandomForestClassifier
  params: {n_estimators: 25, max_depth: 6, random_state: 0, n_jobs: 1}
evaluation: {metrics: [auc, accuracy]}
explain: {enabled: false}
gates: []
register: {model_name: bc, alias: champion}
"""


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["target"] = data.target
    return frame


def write_pipeline(folder: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(folder / "train.csv", index=False)
    path = folder / "modelloop.yaml"
    path.write_text(PIPELINE)
    return path


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def serve_rows(
    client: Any,
    frame: pd.DataFrame,
    *,
    version: int,
    route: str,
    start_ms: int,
    span_ms: int,
    labels: np.ndarray | None = None,
    request_ids: list[str] | None = None,
) -> list[str]:
    """Predict ``frame``'s rows with the registered ``version`` and log them under ``route`` with
    timestamps spread over ``[start_ms, start_ms + span_ms)``, then record ``labels`` (default:
    the frame's own target) as feedback. Returns the request ids."""
    from modelloop.monitoring._logfiles import append_feedback, append_predictions

    home = client.settings.home
    model = client.load_model(f"models:/{MODEL}/{version}")
    X = frame.drop(columns=["target"])
    pred = model.predict(X)
    proba = model.predict_proba(X)
    n = len(frame)
    ids = request_ids or [uuid.uuid4().hex for _ in range(n)]
    stamps = pd.to_datetime(
        np.linspace(start_ms, start_ms + span_ms - 1, n).astype("int64"), unit="ms", utc=True
    )
    logged = X.copy()
    logged.insert(0, "request_id", ids)
    logged.insert(1, "timestamp", stamps)
    logged.insert(2, "model_name", MODEL)
    logged.insert(3, "model_version", version)
    logged.insert(4, "route", route)
    logged["prediction"] = pred
    logged["proba_0"] = proba[:, 0]
    logged["proba_1"] = proba[:, 1]
    append_predictions(home, MODEL, logged.reset_index(drop=True))
    y = frame["target"].to_numpy() if labels is None else labels
    feedback = pd.DataFrame({"request_id": ids, "label": y, "timestamp": stamps})
    append_feedback(home, MODEL, feedback)
    return ids


def now_utc() -> datetime:
    return datetime.now(tz=UTC)
