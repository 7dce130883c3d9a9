"""Writes through a real ``modelloop server`` process: many client processes at once, and a
retry after the connection dropped mid-request (nothing may be written twice)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelloop import Client, Settings
from modelloop.store._sql import SqlStore
from server_support import start_cli_server

WORKERS = Path(__file__).with_name("server_workers.py")


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[str]:
    env = {"MODELLOOP_HOME": str(tmp_path / "server-home"), "MODELLOOP_STORE_URL": store_url}
    with start_cli_server(env) as (url, _proc):
        yield url


def _client_env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    env.update(MODELLOOP_STORE_URL=url, MODELLOOP_HOME=str(tmp_path / "client-home"))
    return env


def test_eight_client_processes_write_exactly_their_rows(
    server: str, store_url: str, tmp_path: Path
) -> None:
    client = Client(Settings(home=tmp_path / "h", store_url=server))
    run = client.start_run("concurrent")
    go = tmp_path / "go"
    procs = []
    for w in range(8):
        args = {
            "run_id": run.run_id, "worker": w, "count": 2000, "flush_every": 250,
            "ready": str(tmp_path / f"ready{w}"), "go": str(go),
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKERS), "log_metrics", json.dumps(args)],
                env=_client_env(server, tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{w}").exists() for w in range(8)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert json.loads(out) == {"logged": 2000}
    run.end()
    client.close()
    direct = SqlStore(store_url)  # counted in the database itself, not through the server
    try:
        assert direct.count_metric_values(run.run_id) == 16_000
        for w in range(8):
            history = direct.get_metric_history(run.run_id, f"w{w}")
            assert [m.step for m in history] == list(range(2000))
    finally:
        direct.close()


class CuttingProxy:
    """A TCP proxy to the server that drops the connection instead of relaying the response to
    the first ``cuts`` metric writes: the server has done the write, the client never hears."""

    def __init__(self, target: str, cuts: int = 1) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.cuts_left = cuts
        self.metric_requests = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._relay, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _relay(self, down: socket.socket) -> None:
        up = socket.create_connection(self._target)
        pending_cut = threading.Event()

        def client_to_server() -> None:
            try:
                while data := down.recv(65536):
                    if b"POST /api/v1/runs/" in data and b"/metrics " in data:
                        with self._lock:
                            self.metric_requests += 1
                            if self.cuts_left > 0:
                                self.cuts_left -= 1
                                pending_cut.set()
                    up.sendall(data)
            except OSError:
                pass
            finally:
                _close(up)

        threading.Thread(target=client_to_server, daemon=True).start()
        try:
            while data := up.recv(65536):
                if pending_cut.is_set():  # the server answered: drop it and the connection
                    break
                down.sendall(data)
        except OSError:
            pass
        finally:
            _close(down)
            _close(up)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_a_retry_after_a_dropped_response_writes_nothing_twice(
    server: str, store_url: str, tmp_path: Path
) -> None:
    proxy = CuttingProxy(server, cuts=1)
    client = Client(Settings(home=tmp_path / "h", store_url=proxy.url))
    try:
        with client.start_run("retries", flush_every=10_000) as run:
            for i in range(500):
                run.log_metric("loss", 1.0 / (i + 1), step=i)
            assert run.flush() == 500  # the first attempt's answer was cut; the retry got one
        assert proxy.cuts_left == 0 and proxy.metric_requests == 2
        direct = SqlStore(store_url)
        try:
            assert direct.count_metric_values(run.run_id) == 500
            assert [m.step for m in direct.get_metric_history(run.run_id, "loss")] == list(
                range(500)
            )
        finally:
            direct.close()
    finally:
        client.close()
        proxy.close()


def test_a_write_its_audit_row_and_its_key_are_stored_together_or_not_at_all(
    server: str, store_url: str
) -> None:
    api = httpx.Client(base_url=f"{server}/api/v1", timeout=60)
    direct = SqlStore(store_url)
    try:
        exp = api.post("/experiments", json={"name": "together"}).json()
        key = {"Idempotency-Key": "retry-key-0001"}
        body = {"experiment_id": exp["experiment_id"], "name": "once"}
        first = api.post("/runs", json=body, headers=key)
        again = api.post("/runs", json=body, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["run_id"] == first.json()["run_id"]  # the stored answer
        runs = direct.search_runs([exp["experiment_id"]]).items
        assert [r.name for r in runs] == ["once"]
        created = [
            e for e in direct.list_audit_events(entity_type="run") if e.action == "run.create"
        ]
        assert [e.entity_id for e in created] == [first.json()["run_id"]]

        # a write that fails stores nothing: no row, no audit event, and its key stays free
        assert api.post("/models", json={"name": "m"}).status_code == 200
        key = {"Idempotency-Key": "retry-key-0002"}
        before = len(direct.list_audit_events())
        missing = api.put("/models/m/aliases/champion", json={"version": 1}, headers=key)
        assert missing.status_code == 404  # no version 1 yet
        assert len(direct.list_audit_events()) == before
        version = {"source": "runs:/x/model"}
        assert api.post("/models/m/versions", json=version).json()["version"] == 1
        moved = api.put("/models/m/aliases/champion", json={"version": 1}, headers=key)
        assert moved.status_code == 200  # the same key runs the write now
        assert direct.get_version_by_alias("m", "champion").version == 1
        assert [e.action for e in direct.list_audit_events(entity_type="alias")] == ["alias.set"]
    finally:
        api.close()
        direct.close()


def test_a_retry_that_would_fail_alone_gets_the_first_answer(server: str, store_url: str) -> None:
    """The retry of a create whose first attempt committed finds the name taken; its answer is
    still the first attempt's, and nothing is written twice."""
    api = httpx.Client(base_url=f"{server}/api/v1", timeout=60)
    direct = SqlStore(store_url)
    try:
        key = {"Idempotency-Key": "create-retry-0001"}
        first = api.post("/experiments", json={"name": "taken"}, headers=key)
        again = api.post("/experiments", json={"name": "taken"}, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        other = api.post("/experiments", json={"name": "taken"})  # a new request: refused
        assert other.status_code == 409
        created = [e for e in direct.list_audit_events() if e.action == "experiment.create"]
        assert len(created) == 1
    finally:
        api.close()
        direct.close()


def test_an_end_carrying_the_last_values_is_applied_once_when_retried(
    server: str, store_url: str
) -> None:
    api = httpx.Client(base_url=f"{server}/api/v1", timeout=60)
    direct = SqlStore(store_url)
    try:
        exp = api.post("/experiments", json={"name": "ends"}).json()
        run_id = api.post("/runs", json={"experiment_id": exp["experiment_id"]}).json()["run_id"]
        body = {
            "status": "FINISHED",
            "keys": ["loss", "loss"],
            "values": [0.5, 0.25],
            "steps": [0, 1],
            "timestamps": [1, 2],
        }
        key = {"Idempotency-Key": "end-retry-0001"}
        first = api.post(f"/runs/{run_id}/end", json=body, headers=key)
        again = api.post(f"/runs/{run_id}/end", json=body, headers=key)  # a retry
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() and first.json()["status"] == "FINISHED"
        assert [m.value for m in direct.get_metric_history(run_id, "loss")] == [0.5, 0.25]
        actions = [e.action for e in direct.list_audit_events(entity_type="run")]
        assert actions.count("run.metrics") == 1 and actions.count("run.end") == 1
        # columns of different lengths: refused whole, the run stays open
        other = api.post("/runs", json={"experiment_id": exp["experiment_id"]}).json()["run_id"]
        bad = api.post(f"/runs/{other}/end", json={**body, "steps": [0]})
        assert bad.status_code == 400 and "same length" in bad.json()["message"]
        assert direct.get_run(other).status.value == "RUNNING"
    finally:
        api.close()
        direct.close()


def test_a_user_added_beside_the_server_ends_open_mode_at_once(server: str, store_url: str) -> None:
    api = httpx.Client(base_url=f"{server}/api/v1", timeout=60)
    direct = SqlStore(store_url)
    try:
        assert api.get("/experiments").status_code == 200  # open mode
        direct.create_user("root", "admin", actor="operator")  # another process's way in
        assert api.get("/experiments").status_code == 401
        assert api.post("/experiments", json={"name": "late"}).status_code == 401
        token = direct.create_token("root", "t", actor="operator")[1]
        ok = api.get("/experiments", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == []
    finally:
        api.close()
        direct.close()


def test_metric_columns_are_checked_whole_and_stored_as_given(server: str, store_url: str) -> None:
    """A batch of metric values as columns: any bad entry refuses the whole batch with 400 and
    stores nothing; a good one stores each value (NaN, infinity and whole numbers included)."""
    api = httpx.Client(base_url=f"{server}/api/v1", timeout=60)
    direct = SqlStore(store_url)
    try:
        exp = api.post("/experiments", json={"name": "columns"}).json()
        run_id = api.post("/runs", json={"experiment_id": exp["experiment_id"]}).json()["run_id"]
        good = {"keys": ["a", "a", "b"], "values": [1, 2.5, 3.0], "steps": [0, 1, 0]}
        good["timestamps"] = [10, 11, 12]
        bad = [
            ({**good, "values": [1, "many", 3.0]}, "many"),
            ({**good, "keys": ["a", "", "b"]}, "non-empty string"),
            ({**good, "keys": ["a", ["x"], "b"]}, "Metric"),
            ({**good, "steps": [0, None, 0]}, "Metric"),
            ({**good, "timestamps": [10, 11]}, "same length"),
        ]
        for body, named in bad:
            answer = api.post(f"/runs/{run_id}/metrics", json=body)
            assert answer.status_code == 400, body
            assert named in answer.json()["message"]
        assert direct.count_metric_values(run_id) == 0
        path = f"/runs/{run_id}/metrics"
        special = b'{"keys":["c","c"],"values":[NaN,Infinity],"steps":[0,1],"timestamps":[1,2]}'
        headers = {"Content-Type": "application/json"}
        assert api.post(path, json=good).status_code == 200
        assert api.post(path, content=special, headers=headers).status_code == 200
        assert [(m.value, m.step) for m in direct.get_metric_history(run_id, "a")] == [
            (1.0, 0),
            (2.5, 1),
        ]
        c = direct.get_metric_history(run_id, "c")
        assert math.isnan(c[0].value) and c[1].value == math.inf
        assert dict(direct.get_run(run_id).metrics) == {"a": 2.5, "b": 3.0, "c": math.inf}
    finally:
        api.close()
        direct.close()
