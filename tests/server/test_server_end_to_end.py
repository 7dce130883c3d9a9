"""The whole product against a real ``modelloop server``, with the client given only the server's
URL and a token (its home holds caches and prediction logs, never a database or artifacts):
the quickstart, a pipeline run, ``modelloop serve`` loading ``NAME@champion`` from the server,
and ``modelloop monitor run``. Every change lands in the server's store under the token's user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelloop.store._sql import SqlStore
from s3_support import free_port
from server_support import start_cli_server, wait_for_http

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flights" / "modelloop.yaml"
MODEL = "flights-delay"


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(server URL, store URL, a deployer's token): a server on SQLite with an operator-made
    admin and a deployer ``ci``."""
    store_url = f"sqlite:///{tmp_path / 'server' / 'store.db'}"
    (tmp_path / "server").mkdir()
    store = SqlStore(store_url)
    store.create_user("root", "admin", actor="operator")
    store.create_user("ci", "deployer", actor="root")
    token = store.create_token("ci", "end to end", actor="root")[1]
    store.close()
    env = {
        "MODELLOOP_HOME": str(tmp_path / "server" / "home"),
        "MODELLOOP_STORE_URL": store_url,
        "MODELLOOP_ARTIFACT_ROOT": str(tmp_path / "server" / "artifacts"),
    }
    with start_cli_server(env) as (url, _proc):
        yield url, store_url, token


def cli(home: Path, url: str, token: str, *args: str, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELLOOP_", "AWS_"))}
    env.update(
        MODELLOOP_STORE_URL=url, MODELLOOP_TOKEN=token, MODELLOOP_HOME=str(home),
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart_pipeline_serve_and_monitor_through_the_server(
    team: tuple[str, str, str], tmp_path: Path
) -> None:
    url, store_url, token = team
    home = tmp_path / "laptop"

    quick = json.loads(cli(home, url, token, "quickstart", "--json"))
    assert quick["version"] >= 1

    out = cli(
        home, url, token, "pipeline", "run", str(EXAMPLE), "--json",
        "--set", "data.args.sample=3000", "--set", "model.params.max_iter=30",
        "--set", "explain.max_rows=100", "--set", "explain.n_local=3",
        "--set", "tune.enabled=false", "--set", "data.cache=false",
        "--set", "register.model_name=flights-pipe", "--set", "gates.2=segment_gap <= 0.5",
    )  # fmt: skip
    result = json.loads(out)
    assert result["status"] == "registered", result

    port_env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELLOOP_", "AWS_"))}
    port_env.update(MODELLOOP_STORE_URL=url, MODELLOOP_TOKEN=token, MODELLOOP_HOME=str(home))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "serve", f"{MODEL}@champion", "--port", str(port)],
        env=port_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    served = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(
            f"{served}/v2/health/ready",
            proc,  # type: ignore[arg-type]
            timeout=120,
            need_ok=True,
            headers={"Authorization": f"Bearer {token}"},
        )
        from modelloop.data import FLIGHTS_FEATURES, load_flights

        rows = load_flights(months=[3]).head(200)[list(FLIGHTS_FEATURES)]
        records = json.loads(rows.to_json(orient="records", date_format="iso"))
        r = httpx.post(
            f"{served}/v1/models/{MODEL}/predict",
            json={"records": records},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 200
        assert httpx.post(f"{served}/v1/models/{MODEL}/predict",
                          json={"records": records[:1]}).status_code == 401  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)  # drains: the prediction log is written
        assert proc.wait(timeout=60) == 0

    cli(home, url, token, "monitor", "run", MODEL, "--window", "1000rows", "--json")

    # What the server's own database says, read around the server:
    store = SqlStore(store_url)
    try:
        champion = store.get_version_by_alias(MODEL, "champion")
        assert champion.version == quick["version"] and champion.user == "ci"
        assert store.get_version_by_alias("flights-pipe", "champion").user == "ci"
        [monitored] = store.list_monitoring_results(MODEL)
        assert monitored.num_rows == 200  # the rows served above, read from the local log
        alias_events = store.list_audit_events(entity_type="alias", model=MODEL)
        assert alias_events and {e.actor for e in alias_events} == {"ci"}
        # the registry's own audit rows name the route the change came through
        assert {e.route for e in alias_events} == {"PUT /api/v1/models/{name}/aliases/{alias}"}
        route_events = store.list_audit_events(actor="ci", entity_type="run")
        assert route_events and all(
            e.route and e.route.startswith("POST /api/v1/runs") for e in route_events
        )
    finally:
        store.close()
    # The laptop kept no database and no artifacts of its own.
    assert not list(home.rglob("*.db")) and not (home / "artifacts").exists()
