"""The quickstart end to end, as a user runs it: a real `modelloop` process in a fresh home."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from modelloop import Client, Settings
from modelloop.data import FLIGHTS_FEATURES, load_flights
from modelloop.models import Signature
from modelloop.store import RunStatus


def _cli(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    env.pop("MODELLOOP_STORE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_quickstart_trains_logs_registers_and_sets_champion(home) -> None:
    proc = _cli("quickstart", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["version"] == 1 and result["alias"] == "champion"
    assert 0.8 < result["auc"] < 1.0
    assert result["train_rows"] > 30_000 and result["test_rows"] > 10_000
    assert sorted(int(m) for m in result["auc_by_month"]) == list(range(3, 13))

    client = Client(Settings.from_env(home=home))
    run = client.get_run(result["run_id"])
    assert run.status is RunStatus.FINISHED
    assert run.metrics["auc"] == result["auc"] and "learning_rate" in run.params
    datasets = {d.role: d.dataset for d in client.store.list_run_datasets(run.run_id)}
    assert datasets["train"].digest == result["dataset_digest"]
    assert set(FLIGHTS_FEATURES) <= set(Signature.from_dict(datasets["train"].schema).columns)
    assert client.resolve("models:/flights-delay@champion").version == 1

    model = client.load_model("models:/flights-delay@champion")
    march = load_flights([3]).head(200)
    proba = model.predict_proba(march[list(FLIGHTS_FEATURES)])
    assert proba.shape == (200, 2)
    assert model.metadata["dataset_digest"] == result["dataset_digest"]
    assert (home / "modelloop.db").is_file() and (home / "artifacts").is_dir()

    table = _cli("models", "show", "flights-delay", home=home)
    assert table.returncode == 0 and "champion" in table.stdout
    client.close()
