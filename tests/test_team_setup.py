"""The team column of the design: PostgreSQL metadata plus S3 artifacts, chosen by URL only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from modelloop import Client, Settings
from s3_support import BUCKET, S3Server


@pytest.fixture
def team_env(home, pg_url: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict:
    prefix = f"team-{uuid.uuid4().hex[:8]}"
    env = {
        "MODELLOOP_STORE_URL": pg_url,
        "MODELLOOP_ARTIFACT_ROOT": f"s3://{BUCKET}/{prefix}",
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {**env, "prefix": prefix}


def test_track_register_and_load_on_postgres_and_s3(team_env, s3_server, breast_cancer, home):
    X, y = breast_cancer
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    writer = Client(Settings.from_env())
    with writer.start_run("team") as run:
        run.log_metric("acc", float(model.score(X, y)))
        run.log_model(model, "model", input_example=X.head(3))
    mv = writer.register_model(run.run_id, "cancer")
    writer.set_alias("cancer", "champion", mv.version)
    n_artifacts = len(writer.list_artifacts(run.run_id))
    writer.close()

    keys = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=team_env["prefix"])
    blobs = [o["Key"] for o in keys.get("Contents", []) if "/blobs/" in o["Key"]]
    assert len(blobs) == n_artifacts >= 3
    assert not (home / "artifacts").exists() and not (home / "modelloop.db").exists()

    # Another process, same URLs: sees the run and serves the same predictions.
    env = {**os.environ, **{k: v for k, v in team_env.items() if k != "prefix"}}
    proc = subprocess.run(
        [sys.executable, "-m", "modelloop", "models", "show", "cancer", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["versions"][0]["aliases"] == ["champion"]
    reader = Client(Settings.from_env(home=home / "other"))
    loaded = reader.load_model("models:/cancer@champion")
    assert np.array_equal(loaded.predict(X), model.predict(X))
    reader.close()
