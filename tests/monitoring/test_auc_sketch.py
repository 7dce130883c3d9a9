"""Streamed AUC from the adaptive score sketch against scikit-learn's ``roc_auc_score``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from modelloop.monitoring._auc import ScoreSketch
from modelloop.monitoring._live import LiveMetricsAccumulator


def _sketch(scores: np.ndarray, labels: np.ndarray, batch: int, max_bins: int = 4096):
    sk = ScoreSketch(max_bins)
    for i in range(0, len(scores), batch):
        sk.update(scores[i : i + batch], labels[i : i + batch] == 1)
    return sk


def _rare_event(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores mostly below 1e-4: a rare-event model; positives score a little higher."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.01).astype(int)
    s = np.exp(rng.normal(-11.5 + 1.2 * y, 1.3))  # median ~1e-5
    return np.clip(s, 0, 1), y


def test_rare_event_scores_match_sklearn_within_the_stated_bound() -> None:
    s, y = _rare_event(300_000, 1)
    assert np.mean(s < 1e-4) > 0.9
    exact = roc_auc_score(y, s)
    sk = _sketch(s, y, 40_000)
    assert len(sk) <= 2 * sk.max_bins  # bounded memory: 300k distinct scores were compressed
    assert abs(sk.auc() - exact) <= sk.error_bound() + 1e-12
    assert abs(sk.auc() - exact) < 1e-3 and sk.error_bound() < 5e-3
    # equal bins on [0, 1] put nearly every score in the first bin: the old histogram was coarse
    bins = np.minimum((s * 10_000).astype(int), 9_999)
    assert np.mean(bins == 0) > 0.9


def test_tied_scores_are_exact() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50_000)
    s = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 2)  # 101 distinct values
    sk = _sketch(s, y, 7_000)
    assert sk.auc() == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert sk.error_bound() == 0.0


def test_well_spread_scores_within_the_bound() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200_000)
    s = 1 / (1 + np.exp(-rng.normal(1.5 * y - 0.75, 1.0)))
    sk = _sketch(s, y, 25_000)
    exact = roc_auc_score(y, s)
    assert abs(sk.auc() - exact) <= sk.error_bound() + 1e-12
    assert abs(sk.auc() - exact) < 1e-4


def test_perfectly_ordered_scores_in_a_tiny_range() -> None:
    """50,000 distinct scores within 1e-9 of 0.5, every positive above every negative."""
    n = 50_000
    s = 0.5 + np.linspace(0, 1e-9, n)
    y = (np.arange(n) >= n // 3).astype(int)
    order = np.random.default_rng(4).permutation(n)  # arrive in any order
    sk = _sketch(s[order], y[order], 6_000)
    assert roc_auc_score(y, s) == 1.0
    assert sk.auc() == 1.0 and sk.error_bound() == 0.0
    assert len(sk) <= 2 * sk.max_bins
    # inside the range the order is kept: one misordered pair group lowers it as it should
    y2 = y.copy()
    y2[[0, -1]] = 1, 0
    sk2 = _sketch(s, y2, 6_000)
    assert abs(sk2.auc() - roc_auc_score(y2, s)) <= sk2.error_bound() + 1e-12


def test_merged_sketches_equal_one_sketch_of_both() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 30_000)
    s = rng.random(30_000) ** 3
    a = _sketch(s[:12_000], y[:12_000], 5_000, max_bins=512)
    b = _sketch(s[12_000:], y[12_000:], 5_000, max_bins=512)
    merged = a.merge(b)
    exact = roc_auc_score(y, s)
    assert abs(merged.auc() - exact) <= merged.error_bound() + 1e-12
    assert merged.n_pos + merged.n_neg == 30_000


def test_live_accumulator_streams_rare_event_auc() -> None:
    s, y = _rare_event(120_000, 6)
    frame = pd.DataFrame({"label": y, "prediction": (s > 1e-3).astype(int), "score": s})
    acc = LiveMetricsAccumulator(task="classification", classes=[0, 1])
    for i in range(0, len(frame), 20_000):
        acc.update(frame.iloc[i : i + 20_000])
    auc = acc.report().metric("auc")
    bound = acc.auc_error_bound()
    assert bound is not None and abs(auc - roc_auc_score(y, s)) <= bound + 1e-12
    assert abs(auc - roc_auc_score(y, s)) < 1e-3
