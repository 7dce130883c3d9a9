"""Alias moves under load: the server loads the new version and switches to it without failing
a request, by its own polling (``--reload-interval``) or on ``POST /v1/admin/reload``."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    Server,
    move_alias,
    register_rf,
    row_records,
    start_server,
    wait_until_ready,
)


@dataclass
class Load:
    """Threads posting single rows until stopped, recording every outcome."""

    url: str
    threads: int = 3
    results: list[tuple[float, float, int, Any]] = field(default_factory=list)  # sent, got, ...
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        import httpx

        body = {"records": row_records(1)}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    resp = client.post(self.url, json=body)
                except httpx.HTTPError as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                    continue
                got = time.monotonic()
                version = resp.json().get("model_version") if resp.status_code == 200 else None
                if resp.status_code != 200:
                    self.errors.append(f"{resp.status_code}: {resp.text}")
                self.results.append((sent, got, resp.status_code, version))

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)

    def wait_for(self, n: int, timeout: float = 30) -> None:
        """Until ``n`` more answers came in."""
        target = len(self.results) + n
        deadline = time.monotonic() + timeout
        while len(self.results) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.results) >= target, f"only {len(self.results)} answers; {self.errors[:3]}"


def champion_version(server: Server, name: str) -> int:
    import httpx

    return httpx.get(f"{server.url}/v1/models/{name}", timeout=10).json()["champion"]["version"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("reload") / "home"
    for name in ("cancer", "cancer_b"):
        assert register_rf(home, name, random_state=0) == 1
        assert register_rf(home, name, random_state=1, alias=None) == 2
    assert register_rf(home, "cancer_b", random_state=2, alias="challenger") == 3
    polling = start_server(
        home, ["cancer@champion"], "--reload-interval", "0.5", "--no-log", wait_ready=False
    )
    manual = start_server(
        home, ["cancer_b@champion"], "--reload-interval", "0", "--no-log", wait_ready=False
    )
    try:
        wait_until_ready(polling)
        wait_until_ready(manual)
        yield {"home": home, "polling": polling, "manual": manual}
    finally:
        for server in (polling, manual):
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        polling.terminate()
        manual.terminate()


def check_switch(load: Load, moved_at: float, switched_at: float) -> None:
    """No failure; v1 before the move, v2 for everything sent after the switch was seen, and
    never v1 again once v2 has answered."""
    assert not load.errors, load.errors[:5]
    assert {status for _, _, status, _ in load.results} == {200}
    before = [v for sent, got, _, v in load.results if got < moved_at]
    after = [v for sent, _, _, v in load.results if sent > switched_at]
    assert before and set(before) == {1}
    assert after and set(after) == {2}
    first_v2 = min(got for _, got, _, v in load.results if v == 2)
    assert [v for sent, _, _, v in load.results if sent > first_v2 and v != 2] == []


def test_alias_move_is_followed_by_polling_without_a_failed_request(
    servers: dict[str, Any],
) -> None:
    server: Server = servers["polling"]
    assert champion_version(server, "cancer") == 1
    with Load(f"{server.url}/v1/models/cancer/predict") as load:
        load.wait_for(30)
        moved_at = time.monotonic()
        move_alias(servers["home"], "cancer", 2)
        deadline = time.monotonic() + 30
        while champion_version(server, "cancer") != 2:
            assert time.monotonic() < deadline, "the alias move was not followed"
            time.sleep(0.05)
        switched_at = time.monotonic()
        load.wait_for(30)
    check_switch(load, moved_at, switched_at)
    assert "cancer: champion now version 2 (was 1)" in server.log()


def test_alias_move_is_followed_on_admin_reload_without_a_failed_request(
    servers: dict[str, Any],
) -> None:
    import httpx

    server: Server = servers["manual"]
    with Load(f"{server.url}/v1/models/cancer_b/predict") as load:
        load.wait_for(30)
        moved_at = time.monotonic()
        move_alias(servers["home"], "cancer_b", 2)
        load.wait_for(20)  # with --reload-interval 0 nothing changes on its own
        assert champion_version(server, "cancer_b") == 1
        resp = httpx.post(f"{server.url}/v1/admin/reload", timeout=60)
        switched_at = time.monotonic()
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"changed": ["cancer_b champion 1 -> 2"]}
        load.wait_for(30)
    check_switch(load, moved_at, switched_at)
    assert champion_version(server, "cancer_b") == 2
    # nothing more to follow: a second reload changes nothing
    assert httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json() == {"changed": []}


def test_challenger_alias_move_is_followed_too(servers: dict[str, Any]) -> None:
    import httpx

    server: Server = servers["manual"]
    url = f"{server.url}/v1/models/cancer_b/predict"
    routing = f"{server.url}/v1/admin/models/cancer_b/routing"

    def answers() -> set[tuple[str, int]]:
        with httpx.Client(timeout=30) as client:
            replies = [client.post(url, json={"records": row_records(1)}) for _ in range(10)]
        assert {r.status_code for r in replies} == {200}
        return {(r.json()["route"], r.json()["model_version"]) for r in replies}

    resp = httpx.put(
        routing, json={"challenger": "@challenger", "mode": "canary", "share": 1.0}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    try:
        assert resp.json()["challenger"]["version"] == 3
        assert answers() == {("canary", 3)}
        move_alias(servers["home"], "cancer_b", 1, alias="challenger")
        changed = httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json()["changed"]
        assert changed == ["cancer_b challenger 3 -> 1"]
        assert answers() == {("canary", 1)}
    finally:
        httpx.put(routing, json={"mode": "off"}, timeout=60)
