"""A window served by two versions (after a retrain): each version's outputs and live metrics are
judged on its own rows against its own reference, and every output names the versions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from typer.testing import CliRunner

from modelloop import InvalidInput
from modelloop.cli import app
from modelloop.monitoring import run_monitor, version_metrics

MODEL = "cancer"  # the model of the two_versions fixture (conftest.py)


def _expected(refs, logged, version: int) -> dict:
    model, ref_x = refs[version]
    rows = logged[version]
    ref_pred = pd.Series(model.predict(ref_x)).value_counts()
    cur_pred = rows["prediction"].value_counts()
    classes = sorted(set(ref_pred.index) | set(cur_pred.index))
    table = [[ref_pred.get(c, 0) for c in classes], [cur_pred.get(c, 0) for c in classes]]
    return {
        "rows": len(rows),
        "accuracy": accuracy_score(rows["label"], rows["prediction"]),
        "f1": f1_score(rows["label"], rows["prediction"]),
        "auc": roc_auc_score(rows["label"], rows["proba_1"]),
        "tv": 0.5
        * np.abs(np.divide(table[0], sum(table[0])) - np.divide(table[1], sum(table[1]))).sum(),
        "ks": ks_2samp(model.predict_proba(ref_x)[:, 1], rows["proba_1"]).statistic,
    }


def test_each_version_is_judged_on_its_own_rows_against_its_own_reference(two_versions) -> None:
    client, refs, logged = two_versions
    out = run_monitor(client, f"{MODEL}@champion", window="2h")
    result = out.result
    assert out.version == 2 and result.window["rows"] == 569
    assert [(v.version, v.rows) for v in result.versions] == [(1, 400), (2, 169)]
    for version in (1, 2):
        want = _expected(refs, logged, version)
        got = result.version(version)
        assert got.labelled == want["rows"]
        assert got.metrics["accuracy"] == pytest.approx(want["accuracy"])
        assert got.metrics["f1"] == pytest.approx(want["f1"])
        # streamed AUC: exact, a few hundred distinct scores are far below the sketch's budget
        assert got.metrics["auc"] == pytest.approx(want["auc"], abs=1e-12)
        drift = got.prediction_drift
        assert drift.n_current == want["rows"]
        assert drift["prediction"].method == "tv_effect"
        assert drift["prediction"].statistic == pytest.approx(want["tv"])
        ks = drift["proba_1"]
        assert ks.method == "ks_effect"
        assert abs(ks.statistic - want["ks"]) <= ks.error_bound + 1e-9
    # the top-level output drift is the monitored version's own, not a mix
    assert result.prediction_drift == result.version(2).prediction_drift
    with pytest.raises(InvalidInput, match="v1, v2"):
        result.version(3)

    # the loop's entry point reads the same figures back from the store
    stored = version_metrics(client.store, MODEL)
    assert sorted(stored) == [1, 2]
    assert stored[1].metrics["accuracy"] == pytest.approx(_expected(refs, logged, 1)["accuracy"])
    assert stored[2].prediction_drift == result.version(2).prediction_drift


def test_cli_json_and_report_name_the_versions_of_the_window(two_versions, tmp_path) -> None:
    _, refs, logged = two_versions
    runner = CliRunner()
    res = runner.invoke(app, ["monitor", "run", f"{MODEL}@champion", "-w", "2h", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    listed = {v["version"]: v for v in data["versions"]}
    assert {k: v["rows"] for k, v in listed.items()} == {1: 400, 2: 169}
    assert listed[1]["metrics"]["accuracy"] == pytest.approx(_expected(refs, logged, 1)["accuracy"])
    assert data["result"]["versions"][0]["prediction_drift"]["n_current"] == 400

    res = runner.invoke(app, ["monitor", "run", MODEL, "-w", "2h"])
    assert res.exit_code == 0, res.output
    assert "v1: 400 rows" in res.stdout and "v2: 169 rows" in res.stdout

    out = tmp_path / "report.html"
    res = runner.invoke(app, ["monitor", "report", MODEL, "-w", "2h", "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    title = page.split("<title>")[1].split("</title>")[0]
    assert "v1 (400 rows)" in title and "v2 (169 rows)" in title
    assert "Outputs of v1 against its own reference" in page
    assert "Outputs of v2 against its own reference" in page
