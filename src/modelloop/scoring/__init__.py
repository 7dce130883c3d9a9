"""Batch scoring: a registered version over Parquet/CSV files, local or on S3, streamed in row
batches, validated against the signature, restartable part by part, with local processes or a
Ray cluster as executor (``modelloop score``)."""

from __future__ import annotations

from modelloop.scoring._job import ScoreSummary, score_batch

__all__ = ["ScoreSummary", "score_batch"]
