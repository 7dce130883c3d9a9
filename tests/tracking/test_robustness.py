"""What must hold when things go wrong: hostile rows in a shared store, half-logged or altered
packages, racing loaders, a store that fails mid-run, and a process that exits mid-run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelloop import (
    ArtifactCorrupted,
    Client,
    Conflict,
    InvalidInput,
    SchemaMismatch,
    Settings,
    StoreError,
)
from modelloop.models import save_model
from modelloop.store import RunStatus


@pytest.fixture
def fitted(breast_cancer):
    X, y = breast_cancer
    return X, y, LogisticRegression(max_iter=5000).fit(X, y)


def _db(client: Client) -> sqlite3.Connection:
    return sqlite3.connect(client.settings.home / "modelloop.db", isolation_level=None)


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_hostile_artifact_rows_never_reach_the_file_system(client: Client, fitted, tmp_path):
    X, _, model = fitted
    with client.start_run("exp") as run:
        run.log_model(model, "model", input_example=X.head(3))
    blob = client.list_artifacts(run.run_id, "model")[0]
    with _db(client) as db:  # a row written behind the store's back, e.g. by another tool
        db.execute(
            "INSERT INTO run_artifacts (run_id, path, digest, size) VALUES (?, ?, ?, ?)",
            (run.run_id, "model/../../../escaped.txt", blob.digest, blob.size),
        )
    before = _tree(tmp_path)
    dest = tmp_path / "dl" / "inner"
    with pytest.raises(ArtifactCorrupted, match="escaped"):
        client.download_artifacts(run.run_id, "", dest)
    with pytest.raises(ArtifactCorrupted):
        client.load_model(f"runs:/{run.run_id}/model")
    assert not (tmp_path / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert {p for p in _tree(tmp_path) - before if "escaped" in p.name} == set()


def test_registered_version_is_pinned_to_its_package(client: Client, fitted) -> None:
    X, _, model = fitted
    with client.start_run("exp") as run:
        run.log_model(model, "model", input_example=X.head(3))
    client.register_model(run.run_id, "pinned")
    # The same path cannot be logged again with other content ...
    from sklearn.dummy import DummyClassifier

    with pytest.raises(Conflict):
        client.log_model(run.run_id, DummyClassifier().fit(X, fitted[1]), "model")
    assert np.array_equal(client.load_model("models:/pinned/1").predict(X), model.predict(X))
    # ... and a row changed behind the store's back is caught at load time.
    other = client.artifacts.put_bytes(b"not the model")
    with _db(client) as db:
        db.execute(
            "UPDATE run_artifacts SET digest = ? WHERE run_id = ? AND path = ?",
            (other.digest, run.run_id, "model/input_example.json"),
        )
    with pytest.raises(ArtifactCorrupted, match="changed after registration"):
        client.load_model("models:/pinned/1")


def test_an_incomplete_package_cannot_be_registered(client: Client, fitted, tmp_path) -> None:
    X, _, model = fitted
    pkg = save_model(model, tmp_path / "pkg", input_example=X.head(3))
    (pkg / "model.skops").unlink()
    with client.start_run("exp") as run:
        run.log_artifact(pkg, "model")
    with pytest.raises(ArtifactCorrupted, match="incomplete"):
        client.register_model(run.run_id, "broken")
    assert client.list_registered_models() == []


def test_failed_reference_profile_registers_nothing(client: Client, fitted) -> None:
    X, _, model = fitted
    with client.start_run("exp") as run:
        run.log_model(model, "model", input_example=X.head(3))
    with pytest.raises(SchemaMismatch, match="mean radius"):
        client.register_model(run.run_id, "ref", reference_data=X.drop(columns=["mean radius"]))
    assert client.list_registered_models() == []
    mv = client.register_model(run.run_id, "ref", reference_data=X)
    assert mv.version == 1 and "modelloop.reference_profile" in mv.tags


def test_invalid_model_names_are_refused(client: Client, fitted) -> None:
    X, _, model = fitted
    with client.start_run("exp") as run:
        run.log_model(model, "model", input_example=X.head(3))
    for bad in ["my model", "team/churn", "../etc", "x@champion", ""]:
        with pytest.raises(InvalidInput):
            client.register_model(run.run_id, bad)


def test_many_threads_load_a_model_for_the_first_time(client: Client, fitted) -> None:
    X, _, model = fitted
    with client.start_run("exp") as run:
        run.log_model(model, "model", input_example=X.head(3))
    client.register_model(run.run_id, "shared")
    expected = model.predict(X)
    results: list[object] = []

    def load() -> None:
        try:
            results.append(Client(client.settings).load_model("models:/shared/1").predict(X))
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(isinstance(r, np.ndarray) and np.array_equal(r, expected) for r in results), [
        r for r in results if not isinstance(r, np.ndarray)
    ]


def test_store_failure_at_the_end_fails_the_run_and_keeps_the_users_error(client: Client):
    run = client.start_run("exp", flush_interval=0)
    run.log_metric("m", 1.0)
    with _db(client) as db:  # the metric table disappears under the run
        db.execute("ALTER TABLE metrics RENAME TO metrics_gone")
    with pytest.raises(RuntimeError, match="user error") as info, run:
        raise RuntimeError("user error")
    assert any("could not close run" in note for note in getattr(info.value, "__notes__", []))
    assert client.get_run(run.run_id).status is RunStatus.FAILED

    second = client.start_run("exp", flush_interval=0)
    second.log_metric("m", 2.0)
    with pytest.raises(StoreError):
        second.end()
    assert client.get_run(second.run_id).status is RunStatus.FAILED
    with _db(client) as db:
        db.execute("ALTER TABLE metrics_gone RENAME TO metrics")


def test_metric_arguments_are_checked(client: Client) -> None:
    run = client.start_run("exp")
    with pytest.raises(InvalidInput, match="step"):
        run.log_metric("m", 1.0, step="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="step"):
        run.log_metrics({"m": 1.0}, step=1.5)  # type: ignore[arg-type]
    run.end()
    with pytest.raises(InvalidInput, match="ended"):
        run.log_batch([])


@pytest.mark.parametrize(("crash", "status"), [(False, "FINISHED"), (True, "FAILED")])
def test_runs_left_open_are_flushed_and_closed_at_exit(home: Path, crash: bool, status: str):
    script = textwrap.dedent(
        f"""
        import modelloop
        run = modelloop.start_run("exit", flush_interval=60)
        for i in range(500):
            run.log_metric("m", i, step=i)
        print(run.run_id, flush=True)
        if {crash}:
            raise RuntimeError("crash")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode != 0) is crash, proc.stderr
    run_id = proc.stdout.split()[0]
    client = Client(Settings.from_env())
    assert client.store.count_metric_values(run_id, "m") == 500
    assert client.get_run(run_id).status.value == status
    client.close()
