"""Lifecycle of a real server process: not ready before the models are loaded, SIGTERM drains
in-flight requests and exits 0, ``--drain-delay`` keeps answering with readiness off, and the
prediction log and feedback written along the way are complete and join on request ids."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    Server,
    breast_cancer,
    metric_samples,
    read_parquets,
    register_rf,
    start_server,
    wait_until_ready,
)

BIG_ROWS = 1000
BIG_REQUESTS = 16


def ready_status(server: Server, path: str = "/v2/health/ready") -> int | None:
    """The status of ``path`` (readiness by default), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def batches_started(server: Server) -> float:
    """How many batches the server has handed to the model so far."""
    return sum(v for n, _, v in metric_samples(server) if n == "modelloop_serving_batch_size_count")


class ReadinessProbe(threading.Thread):
    """Polls readiness from the moment the process starts until it first answers 200."""

    def __init__(self, server: Server, started: float) -> None:
        super().__init__(daemon=True)
        self.server, self.started = server, started
        self.before_ready: list[int | None] = []  # every answer before the first 200
        self.ready_after: float | None = None  # seconds from Popen to the first 200
        self.live_while_loading: list[int | None] = []  # liveness whenever readiness said 400

    def run(self) -> None:
        deadline = self.started + 120
        while time.monotonic() < deadline and self.server.proc.poll() is None:
            status = ready_status(self.server)
            if status == 200:
                self.ready_after = time.monotonic() - self.started
                return
            self.before_ready.append(status)
            if status == 400:
                self.live_while_loading.append(ready_status(self.server, "/v2/health/live"))
            time.sleep(0.02)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("lifecycle") / "home"
    register_rf(home)
    # "draining" logs predictions (only it: both share the home); "delayed" has --drain-delay
    draining = start_server(
        home,
        ["cancer@champion"],
        "--max-queue-rows",
        "100000",
        "--reload-interval",
        "0",
        wait_ready=False,
    )
    started = time.monotonic()
    delayed = start_server(
        home,
        ["cancer@champion"],
        "--drain-delay",
        "2",
        "--no-log",
        "--reload-interval",
        "0",
        wait_ready=False,
    )
    probe = ReadinessProbe(delayed, started)
    probe.start()
    try:
        wait_until_ready(draining)
        probe.join(120)
        yield {"home": home, "draining": draining, "delayed": delayed, "probe": probe}
    finally:
        for server in (draining, delayed):
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)


@pytest.fixture(scope="module")
def drained(servers: dict[str, Any]) -> dict[str, Any]:
    """Small requests and feedback, then big requests in flight when SIGTERM arrives."""
    import httpx

    server: Server = servers["draining"]
    X, y = breast_cancer()
    url = f"{server.url}/v1/models/cancer/predict"
    row_of: dict[str, int] = {}  # logged request id -> dataset row
    with httpx.Client(timeout=60) as client:
        for i in range(20):
            resp = client.post(
                url, json={"records": X.iloc[[i]].to_dict("records"), "id": f"one-{i}"}
            )
            assert resp.status_code == 200, resp.text
            row_of[f"one-{i}"] = i
        for i in range(10):
            rows = list(range(100 + 7 * i, 107 + 7 * i))
            resp = client.post(
                url, json={"records": X.iloc[rows].to_dict("records"), "id": f"multi-{i}"}
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["row_ids"] == [f"multi-{i}/{j}" for j in range(7)]
            row_of.update({f"multi-{i}/{j}": r for j, r in enumerate(rows)})
        for i in range(5):  # without an id: the server makes one
            resp = client.post(url, json={"records": X.iloc[[200 + i]].to_dict("records")})
            assert resp.status_code == 200, resp.text
            row_of[resp.json()["request_id"]] = 200 + i
        labels = [
            {"request_id": rid, "label": int(y.iloc[row])}
            for rid, row in row_of.items()
            if rid.startswith(("one-", "multi-0/", "multi-1/"))
        ]
        resp = client.post(f"{server.url}/v1/models/cancer/feedback", json={"labels": labels})
        assert resp.status_code == 200, resp.text
        n = len(labels)
        assert resp.json() == {
            "model_name": "cancer", "accepted": n, "verified": n, "unverified": 0
        }  # fmt: skip
        single = next(rid for rid, row in row_of.items() if row == 200)
        resp = client.post(
            f"{server.url}/v1/models/cancer/feedback",
            json={"request_id": single, "label": int(y.iloc[200])},
        )
        assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
        labels.append({"request_id": single, "label": int(y.iloc[200])})

    big = (X.to_dict("records") * 2)[:BIG_ROWS]  # rows 0..568, then 0..430 again
    # encoded up front: encoding 16 MB of JSON in the client threads would delay the sends
    # until after SIGTERM, when the server rightly closes connections with no request on them
    payloads = [json.dumps({"records": big, "id": f"big-{i}"}) for i in range(BIG_REQUESTS)]
    batches_before = batches_started(server)
    outcomes: list[tuple[str, float, int, int]] = []  # id, finished, status, predictions
    errors: list[str] = []
    barrier = threading.Barrier(BIG_REQUESTS + 1)

    def send(i: int) -> None:
        with httpx.Client(timeout=120) as client:
            client.get(f"{server.url}/v2/health/live")  # the connection is open before SIGTERM
            barrier.wait()
            try:
                resp = client.post(
                    url, content=payloads[i], headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as e:
                errors.append(f"big-{i}: {type(e).__name__}: {e}")
                return
            n = len(resp.json().get("predictions", [])) if resp.status_code == 200 else -1
            outcomes.append((f"big-{i}", time.monotonic(), resp.status_code, n))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(BIG_REQUESTS)]
    for t in threads:
        t.start()
    barrier.wait()
    deadline = time.monotonic() + 60
    while batches_started(server) == batches_before:  # until the model works on them
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.01)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    code = server.proc.wait(60)
    for i in range(BIG_REQUESTS):
        row_of.update({f"big-{i}/{j}": j % len(X) for j in range(BIG_ROWS)})
    return {
        "server": server,
        "code": code,
        "signalled": signalled,
        "outcomes": outcomes,
        "errors": errors,
        "row_of": row_of,
        "labels": labels,
    }


def test_sigterm_answers_every_in_flight_request_then_exits_0(drained: dict[str, Any]) -> None:
    assert drained["errors"] == []
    outcomes = drained["outcomes"]
    assert len(outcomes) == BIG_REQUESTS
    assert {(status, n) for _, _, status, n in outcomes} == {(200, BIG_ROWS)}
    late = [o for o in outcomes if o[1] > drained["signalled"]]
    assert late, "every request finished before SIGTERM: nothing was in flight"
    assert drained["code"] == 0, drained["server"].log()
    log = drained["server"].log()
    assert "signal SIGTERM: readiness off, draining" in log


def test_prediction_log_has_one_row_per_row_served(drained: dict[str, Any]) -> None:
    home: Path = drained["server"].home
    log = read_parquets(home / "predictions" / "cancer")
    row_of: dict[str, int] = drained["row_of"]
    assert len(log) == len(row_of)
    assert sorted(log["request_id"]) == sorted(row_of)
    assert set(log["route"]) == {"champion"} and set(log["model_version"].astype(int)) == {1}
    X, _ = breast_cancer()
    rows = [row_of[r] for r in log["request_id"]]
    assert (log["mean radius"].to_numpy() == X["mean radius"].to_numpy()[rows]).all()


def test_feedback_lands_under_home_and_joins_the_log_on_request_id(
    drained: dict[str, Any],
) -> None:
    home: Path = drained["server"].home
    feedback = read_parquets(home / "feedback" / "cancer")
    labels = drained["labels"]
    assert sorted(feedback["request_id"]) == sorted(lbl["request_id"] for lbl in labels)
    log = read_parquets(home / "predictions" / "cancer")
    joined = feedback.merge(log, on="request_id", how="inner")
    assert len(joined) == len(labels)
    expected = {lbl["request_id"]: lbl["label"] for lbl in labels}
    assert all(joined["label"].astype(int) == joined["request_id"].map(expected))
    # the model is good on its training data: the join gives a live accuracy near 1
    assert (joined["label"].astype(int) == joined["prediction"].astype(int)).mean() > 0.9


def test_not_ready_before_models_are_loaded(servers: dict[str, Any]) -> None:
    server: Server = servers["delayed"]
    probe: ReadinessProbe = servers["probe"]
    assert probe.ready_after is not None, server.log()
    assert probe.before_ready, "the probe never ran before the server was ready"
    assert 200 not in probe.before_ready
    # the port opens before the models load: not ready (400) but alive (200) meanwhile
    assert 400 in probe.before_ready, probe.before_ready
    assert probe.live_while_loading and set(probe.live_while_loading) == {200}
    m = re.search(
        r"ready: cancer/1 loaded in ([0-9.]+) s, ([0-9.]+) s after the process "
        r"started",
        server.log(),
    )
    assert m, server.log()
    loaded_in, ready_at = float(m[1]), float(m[2])
    assert 0 < loaded_in <= ready_at
    # 200 came no earlier than the moment the log says the models were loaded
    assert probe.ready_after >= ready_at - 0.05, (probe.ready_after, ready_at)


def test_drain_delay_keeps_answering_with_readiness_off_then_exits(
    servers: dict[str, Any],
) -> None:
    import httpx

    server: Server = servers["delayed"]
    X, _ = breast_cancer()
    body = {"records": X.iloc[[0]].to_dict("records")}
    url = f"{server.url}/v1/models/cancer/predict"
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{server.url}/v2/health/ready").status_code == 200
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        ready = client.get(f"{server.url}/v2/health/ready")
        for _ in range(50):  # the signal handler runs at the server's next chance
            if ready.status_code != 200:
                break
            time.sleep(0.02)
            ready = client.get(f"{server.url}/v2/health/ready")
        assert (ready.status_code, ready.json()) == (400, {"ready": False})
        assert client.get(f"{server.url}/v2/models/cancer/ready").status_code == 400
        answered = 0
        while time.monotonic() - signalled < 1.2:
            resp = client.post(url, json=body)
            assert resp.status_code == 200, resp.text
            answered += 1
    assert answered > 0
    assert server.proc.wait(30) == 0, server.log()
    took = time.monotonic() - signalled
    assert took >= 1.8, f"exited {took:.2f} s after SIGTERM with --drain-delay 2"
