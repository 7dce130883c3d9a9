"""A generated seasonal stream: hourly windows whose inputs move with the hour of day, and an
optional drift injected from a known hour on. Used by benchmarks/drift.py and, loaded from this
file, by the calibration tests (tests/monitoring/seasonal_support.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

NUM = [f"x{i}" for i in range(8)]
CAT = ["c0", "c1"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def window(rng: np.random.Generator, start: datetime, n: int, drift: float = 0.0) -> pd.DataFrame:
    """One window of ``n`` rows starting at ``start``: every mean and spread follows the hour;
    ``drift`` shifts x0 and x1 by that many sd and tilts c0."""
    phase = 2 * np.pi * start.hour / 24
    data: dict[str, np.ndarray] = {}
    for i, c in enumerate(NUM):
        mu = 0.5 * np.sin(phase + i) + (drift if i < 2 else 0.0)
        data[c] = rng.normal(mu, 1 + 0.2 * np.cos(phase + i), n)
    for j, c in enumerate(CAT):
        p = np.array([0.4 + 0.15 * np.sin(phase + j), 0.3, 0.3 - 0.15 * np.sin(phase + j)])
        if drift and j == 0:
            p = p + np.array([-drift / 2, 0, drift / 2])
        p = np.clip(p, 0.01, None)
        data[c] = np.array(list("abc"))[rng.choice(3, n, p=p / p.sum())]
    return pd.DataFrame(data)


def stream(
    seed: int, hours: int, n: int, *, start_hour: int = 0, change: int | None = None,
    drift: float = 0.3,
) -> list[tuple[datetime, pd.DataFrame]]:  # fmt: skip
    """``hours`` hourly windows from ``T0 + start_hour``; drifted from hour ``change`` on."""
    rng = np.random.default_rng(seed)
    out = []
    for h in range(start_hour, start_hour + hours):
        t = T0 + timedelta(hours=h)
        out.append((t, window(rng, t, n, drift if change is not None and h >= change else 0.0)))
    return out


def reference(seed: int, n_per_hour: int = 500) -> pd.DataFrame:
    """Two days pooled: the training data's reference profile mixes every hour."""
    return pd.concat([w for _, w in stream(seed, 48, n_per_hour)], ignore_index=True)
