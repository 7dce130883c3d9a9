"""Metric series made small enough to draw, without hiding spikes: bucket by step, keep each
bucket's minimum and maximum (in step order), and always keep the first and last points."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["downsample", "finite", "series_json"]


def downsample(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` (>= 4) points of a series ordered by step, keeping extremes.

    The series is cut into ``max_points // 2`` buckets of equal count; each bucket gives its
    minimum and its maximum, in the order they occur. NaN values are kept out of the extremes
    but a bucket made only of NaN keeps one NaN, so a gap stays visible.
    """
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    x = np.asarray(steps, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = (max_points - 2) // 2  # plus the first and last points
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for lo, hi in itertools.pairwise(edges.tolist()):
        if hi <= lo:
            continue
        chunk = y[lo:hi]
        finite = ~np.isnan(chunk)
        if not finite.any():
            keep.append(lo)
            continue
        masked_low = np.where(finite, chunk, np.inf)
        masked_high = np.where(finite, chunk, -np.inf)
        i, j = int(np.argmin(masked_low)) + lo, int(np.argmax(masked_high)) + lo
        keep.extend(sorted({i, j}))
    index = np.array(sorted({0, *keep, n - 1}), dtype=np.int64)
    return x[index], y[index]


def finite(value: Any) -> float | None:
    """``value`` as a float for a chart when it is a finite number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def series_json(steps: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """``{"x": [...], "y": [...]}`` with NaN and infinities as null (JSON has neither)."""
    return {
        "x": [int(s) for s in steps],
        "y": [float(v) if math.isfinite(v) else None for v in values.tolist()],
    }
