"""A mergeable sketch of (score, class) pairs from which streamed AUC is computed.

The sketch keeps sorted, disjoint closed intervals ``[lo, hi]`` of scores with the number of
positives and negatives in each. It starts exact: one interval per distinct score, so the AUC it
gives is scikit-learn's ``roc_auc_score`` (ties counted as half-ordered, as the Mann-Whitney
statistic does). Past ``2 * max_bins`` intervals it compresses to at most ``max_bins``:

1. neighbouring intervals that hold one class only are joined: no (positive, negative) pair changes
   order, so this loses nothing on the data seen so far;
2. if that is not enough, neighbours are joined into groups of equal mass.

Scores that later fall inside an interval join it. Pairs sharing an interval are counted as
half-ordered, so the AUC differs from the exact one by at most half the share of (positive,
negative) pairs that share an interval of nonzero width: :meth:`ScoreSketch.error_bound` returns
that figure, computed exactly from the counts. The intervals adapt to where the scores are: a
rare-event model whose scores all lie below 1e-4, or scores spread over a range of 1e-9, get the
same resolution as scores spread over [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_BINS", "ScoreSketch"]

#: Intervals kept after a compression; a sketch holds at most twice as many between compressions.
MAX_BINS = 4096


class ScoreSketch:
    """Scores of positives and negatives, summarised for AUC in bounded memory; see the module."""

    def __init__(self, max_bins: int = MAX_BINS) -> None:
        if max_bins < 2:
            raise ValueError(f"max_bins must be at least 2, got {max_bins}")
        self.max_bins = max_bins
        empty = np.empty(0)
        self.lo, self.hi = empty, empty
        self.pos = np.empty(0, dtype=np.int64)
        self.neg = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lo)

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def update(self, scores: np.ndarray, positive: np.ndarray) -> ScoreSketch:
        """Add finite ``scores`` with their class (``positive``: a boolean array)."""
        scores = np.asarray(scores, dtype=np.float64)
        positive = np.asarray(positive, dtype=bool)
        if len(scores) == 0:
            return self
        values, inverse = np.unique(scores, return_inverse=True)
        pos = np.bincount(inverse[positive], minlength=len(values))
        neg = np.bincount(inverse[~positive], minlength=len(values))
        self._absorb(values, values, pos, neg)
        return self

    def merge(self, other: ScoreSketch) -> ScoreSketch:
        """Add everything ``other`` holds (sketches of two shards give the sketch of both)."""
        self._absorb(other.lo, other.hi, other.pos, other.neg)
        return self

    def _absorb(self, lo: np.ndarray, hi: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        lo = np.concatenate([self.lo, lo])
        hi = np.concatenate([self.hi, hi])
        pos = np.concatenate([self.pos, pos]).astype(np.int64)
        neg = np.concatenate([self.neg, neg]).astype(np.int64)
        order = np.lexsort((hi, lo))
        lo, hi, pos, neg = lo[order], hi[order], pos[order], neg[order]
        # an interval starting at or before the furthest end so far overlaps it: same group
        reach = np.maximum.accumulate(hi)
        starts = np.concatenate([[True], lo[1:] > reach[:-1]])
        self._group(starts, lo, hi, pos, neg)
        if len(self) > 2 * self.max_bins:
            self._compress()

    def _group(
        self, starts: np.ndarray, lo: np.ndarray, hi: np.ndarray, pos: np.ndarray, neg: np.ndarray
    ) -> None:
        idx = np.flatnonzero(starts)
        self.lo = lo[idx]
        self.hi = np.maximum.reduceat(hi, idx) if len(idx) else hi[:0]
        self.pos = np.add.reduceat(pos, idx) if len(idx) else pos[:0]
        self.neg = np.add.reduceat(neg, idx) if len(idx) else neg[:0]

    def _compress(self) -> None:
        lo, hi, pos, neg = self.lo, self.hi, self.pos, self.neg
        # 1. runs of one class only: 1 = positives only, 0 = negatives only, -1 = both
        cls = np.where(neg == 0, 1, np.where(pos == 0, 0, -1))
        starts = np.concatenate([[True], (cls[1:] != cls[:-1]) | (cls[1:] == -1)])
        self._group(starts, lo, hi, pos, neg)
        if len(self) <= self.max_bins:
            return
        # 2. groups of equal mass, at most max_bins of them
        lo, hi, pos, neg = self.lo, self.hi, self.pos, self.neg
        mass = pos + neg
        before = np.cumsum(mass) - mass
        group = (before * self.max_bins) // max(int(mass.sum()), 1)
        starts = np.concatenate([[True], group[1:] != group[:-1]])
        self._group(starts, lo, hi, pos, neg)

    def auc(self) -> float | None:
        """The ROC AUC (None without both classes); see :meth:`error_bound` for its accuracy."""
        n_pos, n_neg = self.n_pos, self.n_neg
        if not n_pos or not n_neg:
            return None
        below = np.cumsum(self.neg) - self.neg  # negatives in lower intervals
        pos = self.pos.astype(np.float64)  # counts past 3e9 would overflow int64 products
        pairs = float((pos * below).sum()) + 0.5 * float((pos * self.neg).sum())
        return pairs / (n_pos * n_neg)

    def error_bound(self) -> float:
        """The most :meth:`auc` can differ from the exact AUC of every score added."""
        n_pos, n_neg = self.n_pos, self.n_neg
        if not n_pos or not n_neg:
            return 0.0
        wide = self.hi > self.lo
        shared = self.pos[wide].astype(np.float64) * self.neg[wide]
        return 0.5 * float(shared.sum()) / (n_pos * n_neg)
