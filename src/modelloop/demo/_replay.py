"""Replay NYC flights of chosen months through a registered model into its prediction log, with
their true outcomes as feedback — the traffic a server would have logged."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client

__all__ = ["ReplayResult", "replay_flights", "replay_frame"]


@dataclass(frozen=True)
class ReplayResult:
    model: str
    version: int
    rows: int
    predictions: str
    feedback: str | None


def replay_frame(
    client: Client,
    model: str,
    frame: pd.DataFrame,
    *,
    label: str | None = None,
    minutes: float = 60.0,
    now: datetime | None = None,
) -> tuple[ReplayResult, pd.DataFrame]:
    """Score ``frame`` with ``model`` (``NAME``, ``NAME@ALIAS``, ``NAME/VERSION``) and log it,
    spread evenly over the last ``minutes``; ``label`` names the column of true outcomes.

    Returns the result and the logged rows (with the label, when given).
    """
    import pandas as pd

    from modelloop.monitoring._logfiles import append_feedback, append_predictions
    from modelloop.registry import parse_model_spec

    if frame.empty:
        raise InvalidInput("nothing to replay: the frame is empty")
    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    package = client.load_model(f"models:/{mv.name}/{mv.version}")
    if label is not None and label not in frame.columns:
        raise InvalidInput(f"label column {label!r} is not in the frame")
    features = frame.drop(columns=[label]) if label is not None else frame
    inputs = package.signature.validate(features) if package.signature else features
    end = now or datetime.now(UTC)
    ages = np.linspace(minutes, 0.0, len(inputs), endpoint=False)
    log = inputs.reset_index(drop=True).copy()
    log.insert(0, "request_id", [uuid.uuid4().hex for _ in range(len(log))])
    log.insert(1, "timestamp", pd.to_datetime([end - timedelta(minutes=float(a)) for a in ages]))
    log["model_name"] = mv.name
    log["model_version"] = mv.version
    log["route"] = "champion"
    log["prediction"] = package.model.predict(inputs)
    if hasattr(package.model, "predict_proba"):
        proba = package.model.predict_proba(inputs)
        for j, cls in enumerate(package.model.classes_):
            log[f"proba_{cls}"] = proba[:, j]
    home = client.settings.home
    seg = append_predictions(home, mv.name, log)
    fb = None
    if label is not None:
        labels = pd.DataFrame(
            {
                "request_id": log["request_id"],
                "label": frame[label].to_numpy(),
                "timestamp": log["timestamp"],
            }
        )
        fb = str(append_feedback(home, mv.name, labels))
        log["label"] = labels["label"]
    return ReplayResult(mv.name, mv.version, len(log), str(seg), fb), log


def replay_flights(
    client: Client,
    model: str = "flights-delay@champion",
    *,
    months: Sequence[int] = (7,),
    rows: int = 20_000,
    seed: int = 0,
    minutes: float = 60.0,
) -> ReplayResult:
    """Replay a sample of the given months of 2013 (with their delays as feedback)."""
    from modelloop.data import FLIGHTS_FEATURES, load_flights

    bad = [m for m in months if not 1 <= m <= 12]
    if bad:
        raise InvalidInput(f"months must be 1-12, got {bad}")
    flights = load_flights(months)
    sample = flights.sample(min(rows, len(flights)), random_state=seed)
    frame = sample[[*FLIGHTS_FEATURES, "delayed"]]
    result, _ = replay_frame(client, model, frame, label="delayed", minutes=minutes)
    return result
