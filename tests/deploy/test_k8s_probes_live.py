"""The Deployment's probes, proven on a real ``modelloop serve`` started with the container's own
arguments and environment (Secrets filled in): both probe commands succeed once the model is
loaded, the probe routes answer 200 over HTTP with a token (and 401 without, which is why the
probes carry one), and on SIGTERM readiness fails at once while liveness and predictions go on
for the drain delay, then the process exits 0 within the termination grace period."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.k8s_support import by_kind
from modelloop.deploy import (
    DEFAULT_DRAIN_DELAY_S,
    HOME_MOUNT,
    LIVENESS_PATH,
    READINESS_PATH,
    kubernetes_manifests,
)
from s3_support import free_port
from serving.serving_support import register_rf, row_records

TOKEN = "k8s-probe-token-0123456789abcdef"
DRAIN_DELAY_S = DEFAULT_DRAIN_DELAY_S  # what the Deployment uses


def container_env(
    container: dict[str, Any], secrets: dict[str, dict[str, str]], home: Path
) -> dict:
    """The environment the kubelet would give the container, Secrets resolved; the home mount
    (an emptyDir in the pod) is a folder of the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = str(home) if item["value"] == HOME_MOUNT else item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"missing secret key {ref}"
            continue
        env[item["name"]] = value
    return env


def run_probe(probe: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = list(probe["exec"]["command"])
    assert command[0] == "python"
    command[0] = sys.executable  # the image's python
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=probe["timeoutSeconds"] + 5
    )


def get(url: str, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def start_pod(tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """Starts ``modelloop serve`` as the Deployment's container would: its arguments, its
    environment with the Secrets filled in, over a SQLite store with cancer@champion."""
    home = tmp_path / "mlhome"
    register_rf(home, "cancer")
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(**kwargs: Any) -> dict[str, Any]:
        port = free_port()
        manifests = kubernetes_manifests("cancer@champion", port=port, **kwargs)
        spec = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        secrets = {
            "modelloop-store": {"MODELLOOP_STORE_URL": f"sqlite:///{home / 'modelloop.db'}"},
            "modelloop-serve-tokens": {"MODELLOOP_SERVE_TOKENS": f"{TOKEN}:predict"},
        }
        env = container_env(container, secrets, home)
        assert container["command"] == ["modelloop"]
        log_path = tmp_path / f"serve-{port}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed at the end of the test
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelloop", *container["args"]],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))
        return {
            "proc": proc,
            "env": env,
            "container": container,
            "pod_spec": spec,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "log": log_path,
        }

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


def pod_address() -> str | None:
    """A non-loopback IPv4 address of this machine (what a kubelet's probe connects to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def wait_ready(pod: dict[str, Any], timeout: float = 90.0) -> None:
    probe = pod["container"]["readinessProbe"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pod["proc"].poll() is None, pod["log"].read_text()
        if run_probe(probe, pod["env"]).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s:\n{pod['log'].read_text()}")


def test_the_probes_pass_on_the_real_server_and_follow_its_drain(start_pod) -> None:
    pod = start_pod()
    c, env, url = pod["container"], pod["env"], pod["url"]
    wait_ready(pod)
    live = run_probe(c["livenessProbe"], env)
    assert live.returncode == 0, live.stderr
    for path in (LIVENESS_PATH, READINESS_PATH, "/v2/models/cancer/ready"):
        status, body = get(url + path, TOKEN)
        assert status == 200 and body.get("live", body.get("ready")) is True, (path, body)
        assert get(url + path, None)[0] == 401  # why the probes are exec probes with a token

    request = urllib.request.Request(
        f"{url}/v1/models/cancer/predict",
        data=json.dumps({"records": row_records(1)}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    pod["proc"].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert get(url + READINESS_PATH, TOKEN) == (400, {"ready": False})  # leaves the Service
    with urllib.request.urlopen(request, timeout=5) as r:  # yet answers during the delay
        assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
    ready = run_probe(c["readinessProbe"], env)
    assert ready.returncode != 0 and READINESS_PATH in ready.stderr
    assert run_probe(c["livenessProbe"], env).returncode == 0  # not restarted while draining
    code = pod["proc"].wait(pod["pod_spec"]["terminationGracePeriodSeconds"])
    assert code == 0, pod["log"].read_text()
    assert time.monotonic() - sent >= DRAIN_DELAY_S


def test_without_tokens_the_http_probes_answer_on_the_pod_address(start_pod) -> None:
    """Open mode (no tokens Secret): httpGet probes, as a kubelet sends them, to the pod's
    address with its own Host header: the server takes them (its loopback Host check is for
    requests arriving on loopback)."""
    address = pod_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    pod = start_pod(serve_tokens_secret=None)
    c = pod["container"]
    assert "--allow-unauthenticated" in c["args"]
    deadline = time.monotonic() + 90
    base = f"http://{address}:{pod['port']}"
    ready = c["readinessProbe"]["httpGet"]
    while True:
        try:
            if get(base + ready["path"], None)[0] == 200:
                break
        except OSError:  # not listening yet
            pass
        assert pod["proc"].poll() is None, pod["log"].read_text()
        assert time.monotonic() < deadline, pod["log"].read_text()
        time.sleep(0.2)
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["port"] == c["ports"][0]["name"]
        status, body = get(base + probe["httpGet"]["path"], None)
        assert status == 200 and True in body.values(), body
    pod["proc"].send_signal(signal.SIGTERM)
    assert pod["proc"].wait(pod["pod_spec"]["terminationGracePeriodSeconds"]) == 0
