"""Data loader and model builder of the flights example pipeline (``modelloop.yaml``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from modelloop.data import load_flights


def load(months: Sequence[int] = (1, 2), sample: int | None = None, seed: int = 0) -> pd.DataFrame:
    """NYC flights of ``months`` (2013) that arrived; ``sample`` keeps that many random rows."""
    frame = load_flights(months)
    if sample is not None and sample < len(frame):
        frame = frame.sample(sample, random_state=seed).sort_values("date", kind="stable")
    return frame.reset_index(drop=True)


def build_model(
    max_iter: int = 200,
    learning_rate: float = 0.1,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 20,
    l2_regularization: float = 0.0,
    random_state: int = 0,
) -> Any:
    """Gradient-boosted trees over the departure-time features (categoricals ordinal-encoded):
    the demo model with these hyperparameters."""
    from modelloop.demo import build_model as demo_model

    return demo_model(random_state=random_state).set_params(
        clf__max_iter=max_iter,
        clf__learning_rate=learning_rate,
        clf__max_leaf_nodes=max_leaf_nodes,
        clf__min_samples_leaf=min_samples_leaf,
        clf__l2_regularization=l2_regularization,
    )
