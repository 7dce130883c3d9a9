"""Datasets: content digests, profiles, and the bundled demo data."""

from __future__ import annotations

from modelloop.data._datasets import dataset_digest, describe_frame
from modelloop.data._flights import (
    FLIGHTS_CATEGORICAL,
    FLIGHTS_FEATURES,
    FLIGHTS_NUMERIC,
    flights_csv,
    load_flights,
)

__all__ = [
    "FLIGHTS_CATEGORICAL",
    "FLIGHTS_FEATURES",
    "FLIGHTS_NUMERIC",
    "dataset_digest",
    "describe_frame",
    "flights_csv",
    "load_flights",
]
