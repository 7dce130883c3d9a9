"""Shared parts of the loop tests: a small pipeline on scikit-learn's breast cancer data, and
traffic written to the prediction log and feedback exactly as the server writes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelloop.loop import parse_policy
from modelloop.loop._actions import PipelineActions
from modelloop.loop._controller import Controller

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


HOUR = 3_600_000
DAY = 24 * HOUR


def make_policy(**changes: Any) -> Any:
    doc: dict[str, Any] = {
        "model": MODEL,
        "cooldown": "1h",
        "max_retrains_per_day": 5,
        "triggers": {"drift_share": 0.5},
        "training": {"source": "log", "window": "30d", "min_labelled_rows": 200},
        "gate": {"metric": "accuracy", "window": "30d", "min_rows": 100, "tolerance": 0.05},
        "rollout": {
            "canary": {
                "steps": [0.25, 0.5],
                "min_duration": "1h",
                "max_duration": "6h",
                "min_outcomes": 100,
            }
        },
        "judge": {"margin": 0.1, "max_p99_latency_ratio": None, "max_error_rate": None},
    }
    for key, value in changes.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    return parse_policy(doc)


class Clock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def make_world(client: Any, tmp_path: Path) -> dict[str, Any]:
    from modelloop.monitoring import run_monitor
    from modelloop.pipeline import Pipeline

    frame = breast_cancer()
    pipeline_file = write_pipeline(tmp_path, frame.iloc[:400])
    result = Pipeline.from_file(pipeline_file).run(client)
    assert result.registered_version == 1
    rng = np.random.default_rng(0)
    features = [c for c in frame.columns if c != "target"]
    drifted = frame.sample(600, replace=True, random_state=1).reset_index(drop=True)
    drifted[features] = drifted[features] * 1.4 + rng.normal(0, 0.01, (600, len(features)))
    start = ms(datetime.now(tz=UTC) - timedelta(days=5))
    serve_rows(client, drifted, version=1, route="champion", start_ms=start - DAY, span_ms=DAY)
    outcome = run_monitor(
        client, MODEL, window="2d", now=datetime.fromtimestamp(start / 1000, tz=UTC)
    )
    assert outcome.record is not None and (outcome.record.share_drifted or 0) >= 0.5
    return {
        "client": client,
        "file": pipeline_file,
        "frame": frame,
        "drifted": drifted,
        "features": features,
        "clock": Clock(start + 60_000),
    }


def make_controller(
    world: dict[str, Any], policy: Any, holder: str = "ctl-a", notify: Any = None
) -> Controller:
    client = world["client"]
    return Controller(
        client.store,
        policy,
        PipelineActions(client, world["file"]),
        home=client.settings.home,
        holder=holder,
        clock=world["clock"],
        notify=notify,
    )
