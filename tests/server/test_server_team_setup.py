"""The README's "Running it for a team" as written: PostgreSQL and S3 behind ``modelloop server``,
the first admin and its token made with the CLI on the server's side, and a client that holds
only the server's URL and a token (no database URL, no bucket keys)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from modelloop.store._sql import SqlStore
from s3_support import BUCKET, S3Server
from server_support import start_cli_server


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_server_over_postgres_and_s3_as_the_readme_sets_it_up(
    pg_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    prefix = f"server-{uuid.uuid4().hex[:8]}"
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    server_env.update(
        MODELLOOP_HOME=str(tmp_path / "server-home"),
        MODELLOOP_STORE_URL=pg_url,
        MODELLOOP_ARTIFACT_ROOT=f"s3://{BUCKET}/{prefix}",
        AWS_ENDPOINT_URL=s3_server.endpoint_url,
    )
    _cli(server_env, "users", "add", "root", "--role", "admin")
    token = _cli(server_env, "tokens", "create", "--user", "root").strip().split()[-1]
    assert token.startswith("mlt_")

    with start_cli_server(server_env) as (url, _proc):
        # the laptop's environment names neither the database nor the bucket, nor any AWS key
        client_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("MODELLOOP_", "AWS_"))
        }
        client_env.update(
            MODELLOOP_HOME=str(tmp_path / "laptop"), MODELLOOP_STORE_URL=url,
            MODELLOOP_TOKEN=token, OMP_NUM_THREADS="1",
        )  # fmt: skip
        quick = json.loads(_cli(client_env, "quickstart", "--json"))

    keys = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    blobs = [o["Key"] for o in keys.get("Contents", []) if "/blobs/" in o["Key"]]
    store = SqlStore(pg_url)
    try:
        version = store.get_model_version(quick["model_name"], quick["version"])
        assert version.user == "root"  # the token's user, not the laptop's login
        artifacts = store.list_run_artifacts(version.run_id, "")
        assert artifacts and {a.digest for a in artifacts} <= {k.rsplit("/", 1)[1] for k in blobs}
        assert store.list_audit_events(actor="root")
    finally:
        store.close()
    assert not list((tmp_path / "laptop").rglob("*.db"))
    assert not (tmp_path / "laptop" / "artifacts").exists()
