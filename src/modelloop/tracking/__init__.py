"""Tracking: runs, params, buffered metrics, artifacts, models and datasets."""

from __future__ import annotations

from modelloop.tracking._run import ActiveRun

__all__ = ["ActiveRun"]
