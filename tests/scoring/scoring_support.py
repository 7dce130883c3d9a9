"""A small registered flights model and Parquet/CSV inputs for the batch scoring tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelloop import Client, Settings

FEATURES = ["day_of_week", "sched_dep_hour", "distance", "dep_delay", "carrier", "origin", "dest"]


def flights_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` flights rows (drawn from the bundled 2013 data), with an ``id`` column."""
    from modelloop.data import load_flights

    flights = load_flights(months=[1, 2])
    sample = flights.sample(n=rows, replace=rows > len(flights), random_state=seed)
    out = sample[[*FEATURES, "delayed"]].reset_index(drop=True)
    out.insert(0, "id", np.arange(rows, dtype=np.int64))
    return out


def register_flights_model(client: Client, name: str = "flights") -> int:
    """A small gradient-boosted delay classifier registered as ``name@champion``; its string
    columns refuse categories it was not trained with."""
    from modelloop.demo._quickstart import build_model

    train = flights_frame(20_000, seed=1)
    model = build_model()
    model.set_params(clf__max_iter=20)
    model.fit(train[FEATURES], train["delayed"])
    cats = {c: sorted(train[c].unique().tolist()) for c in ("carrier", "origin", "dest")}
    with client.start_run("scoring-tests", flush_interval=0) as run:
        run.log_model(
            model,
            "model",
            input_example=train[FEATURES].head(5),
            training_data=train[FEATURES],
            categorical=cats,
            unseen="refuse",
        )
    mv = client.register_model(run.run_id, name)
    client.set_alias(name, "champion", mv.version)
    return mv.version


def register_numeric_model(client: Client, name: str = "numeric") -> int:
    """A logistic regression over the numeric flights columns (converts to ONNX)."""
    from sklearn.linear_model import LogisticRegression

    train = flights_frame(5_000, seed=2)
    cols = FEATURES[:4]
    model = LogisticRegression(max_iter=200).fit(train[cols], train["delayed"])
    with client.start_run("scoring-tests", flush_interval=0) as run:
        run.log_model(model, "model", input_example=train[cols].head(5))
    mv = client.register_model(run.run_id, name)
    client.set_alias(name, "champion", mv.version)
    return mv.version


def write_parquet_files(
    folder: Path, frame: pd.DataFrame, files: int, row_group_rows: int
) -> list[Path]:
    """``frame`` split into ``files`` Parquet files of ``row_group_rows``-row groups."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), files)):
        path = folder / f"flights-{i:02d}.parquet"
        frame.iloc[chunk].to_parquet(path, row_group_size=row_group_rows, index=False)
        paths.append(path)
    return paths


def read_output(out: Path) -> pd.DataFrame:
    """Every output part, sorted by row id (source file, row)."""
    parts = sorted(out.glob("part-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values(["source_file", "source_row"], ignore_index=True)


SRC = Path(__file__).resolve().parents[2] / "src"


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m modelloop`` child on this checkout and ``home``."""
    import os

    env = dict(os.environ)
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    env["MODELLOOP_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def with_bad_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """``frame`` with values the model refuses at a few rows: id -> the refused column."""
    out = frame.copy()
    bad = {3: "carrier", 1_500: "dep_delay", 7_777: "origin"}
    out.loc[3, "carrier"] = "ZZ"  # a carrier the model never saw (its categories refuse it)
    out.loc[1_500, "dep_delay"] = np.nan  # trained without missing values
    out.loc[7_777, "origin"] = "XXX"
    return out, bad


def known_rows(frame: pd.DataFrame, client: Client, model: str) -> pd.DataFrame:
    """The rows of ``frame`` whose categories the model knows (sampled data may hold others)."""
    from modelloop.models._package import read_signature

    signature = read_signature(client.fetch_model(f"models:/{model}"))
    assert signature is not None
    keep = np.ones(len(frame), dtype=bool)
    for spec in signature.inputs:
        if spec.categories is not None:
            keep &= frame[spec.name].isin(list(spec.categories)).to_numpy()
    return frame[keep].reset_index(drop=True)


@contextlib.contextmanager
def flights_home(home: Path) -> Iterator[Client]:
    """A client on a fresh embedded store at ``home`` (store variables cleared) with the flights
    model registered as flights@champion; closed on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_HOME", str(home))
        for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT", "MODELLOOP_TRUSTED_TYPES"):
            mp.delenv(var, raising=False)
        client = Client(Settings.from_env())
        try:
            register_flights_model(client)
            yield client
        finally:
            client.close()
