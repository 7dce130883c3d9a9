"""Replicas that share one prediction log on S3 (``MODELLOOP_LOG_ROOT``): a real moto server,
real ``modelloop serve`` processes on loopback, the log read back as monitoring reads it."""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    Server,
    post_many,
    register_rf,
    row_records,
    sample,
    scrape,
    start_server,
)

from s3log_support import LOG_BUCKET, RestartableS3

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

PREDICT = "/v1/models/cancer/predict"


@pytest.fixture
def s3() -> Iterator[RestartableS3]:
    server = RestartableS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving_support import breast_cancer

    from modelloop._client import Client
    from modelloop._config import Settings

    home = tmp_path_factory.mktemp("shared-log") / "home"
    version = register_rf(home)
    client = Client(Settings(home=home))
    try:
        client.set_reference("cancer", version, breast_cancer()[0])
    finally:
        client.close()
    return home


@pytest.fixture
def in_env(s3: RestartableS3) -> Iterator[dict[str, str]]:
    """This process reads the shared log root the replicas write."""
    env = s3.env()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def _bodies(n: int, start: int = 0) -> list[dict[str, Any]]:
    records = row_records(50)
    return [{"records": [records[(start + i) % 50]]} for i in range(n)]


def _answered(urls: list[str], n: int, start: int = 0) -> list[str]:
    """POST ``n`` one-row requests spread over ``urls``; the request ids of the answers."""
    targets = [f"{urls[i % len(urls)]}{PREDICT}" for i in range(n)]
    replies = post_many(targets, _bodies(n, start), concurrency=6)
    assert [r.status_code for r in replies] == [200] * n, replies[0].text
    return [r.json()["request_id"] for r in replies]


def _logged_ids(home: Path) -> Counter[str]:
    """Request ids of the prediction log over the last hour, as one monitoring window sees
    them (read with this process's MODELLOOP_LOG_ROOT)."""
    from modelloop.monitoring import PredictionLog
    from modelloop.monitoring._windows import TimeRange

    now = datetime.now(UTC)
    window = TimeRange(now - timedelta(hours=1), now + timedelta(minutes=5))
    frame = PredictionLog.for_model(home, "cancer").read(window, ["request_id"])
    return Counter(frame["request_id"])


def _stop_all(servers: list[Server]) -> None:
    for s in servers:
        assert s.terminate() == 0, s.log()


def _ready(server: Server) -> tuple[int, dict[str, Any]]:
    import json

    with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=10) as r:
        return r.status, json.loads(r.read())


@pytest.mark.slow
def test_three_replicas_one_log_every_answer_once(
    model_home: Path, s3: RestartableS3, in_env: dict[str, str]
) -> None:
    servers = [start_server(model_home, ["cancer@champion"], env=in_env) for _ in range(3)]
    try:
        ids = _answered([s.url for s in servers], 300)
    finally:
        _stop_all(servers)  # SIGTERM: each replica writes what it holds, then exits
    assert len(set(ids)) == 300
    # one object per replica and hour at least: the replicas wrote side by side
    keys = list(s3.objects())
    replicas = {k.rsplit("/", 1)[1].split("-")[2] for k in keys if "/predictions/" in k}
    assert len(replicas) == 3, keys
    assert all("/model=cancer/date=" in k and "/hour=" in k for k in keys)
    assert _logged_ids(model_home) == Counter(ids)

    # the monitoring run over the shared log sees the same rows, each once
    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.monitoring import run_monitor

    client = Client(Settings(home=model_home))
    try:
        outcome = run_monitor(client, "cancer@champion", window="1h", store_result=False)
    finally:
        client.close()
    assert outcome.summary.n_rows == 300


@pytest.mark.slow
def test_an_outage_of_the_log_root_loses_and_repeats_nothing(
    model_home: Path, s3: RestartableS3, in_env: dict[str, str]
) -> None:
    server = start_server(model_home, ["cancer@champion"], env=in_env)
    try:
        before = _answered([server.url], 60)
        _wait(lambda: len(_logged_ids(model_home)) == 60, "first rows uploaded")
        # moto keeps its objects in memory: what it held is put back after the restart, as a
        # durable store would have kept it
        kept = s3.objects()
        s3.stop()
        during = _answered([server.url], 120, start=7)  # the server keeps answering
        _wait(lambda: _spool(server)[1] > 0, "segments spooled")
        status, ready = _ready(server)
        assert status == 200 and ready["ready"] is True
        assert ready["log_spool"]["spool_segments"] > 0
        assert f"127.0.0.1:{s3.port}" in ready["log_spool"]["root"]
        assert LOG_BUCKET in ready["log_spool"]["root"]
        assert sample(scrape(server), "modelloop_serving_log_upload_errors_total") > 0
        s3.start()
        s3.put_objects(kept)
        after = _answered([server.url], 40, start=13)
        _wait(lambda: _spool(server) == (0.0, 0.0), "the spool uploaded")
        status, ready = _ready(server)
        assert "log_spool" not in ready
    finally:
        _stop_all([server])
    answered = before + during + after
    assert _logged_ids(model_home) == Counter(answered)  # every row once


def _spool(server: Server) -> tuple[float, float]:
    got = scrape(server)
    return (
        sample(got, "modelloop_serving_log_spool_bytes"),
        sample(got, "modelloop_serving_log_spool_segments"),
    )


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(0.25)


@pytest.mark.slow
def test_a_full_spool_drops_and_counts_rows_and_the_server_keeps_answering(
    model_home: Path, s3: RestartableS3, in_env: dict[str, str]
) -> None:
    s3.stop()  # the log root is unreachable from the start
    bound = 100_000
    env = {**in_env, "MODELLOOP_LOG_SPOOL_MAX_BYTES": str(bound)}
    server = start_server(model_home, ["cancer@champion"], env=env)
    try:
        for start in range(0, 3000, 150):  # until the spool is full
            _answered([server.url], 150, start=start)  # every request answered (200)
            time.sleep(2.5)  # a segment per round
            if sample(scrape(server), "modelloop_serving_log_spool_dropped_rows_total") > 0:
                break
        got = scrape(server)
        assert 0 < sample(got, "modelloop_serving_log_spool_bytes") <= bound
        assert sample(got, "modelloop_serving_log_spool_max_bytes") == bound
        dropped = sample(got, "modelloop_serving_log_spool_dropped_rows_total")
        assert sample(got, "modelloop_serving_prediction_log_dropped_rows_total") >= dropped
        status, ready = _ready(server)
        assert status == 200 and ready["ready"] is True
        assert ready["log_spool"]["dropped_rows"] == dropped
        assert ready["log_spool"]["spool_max_bytes"] == bound
        _answered([server.url], 20)
    finally:
        _stop_all([server])
    assert "log spool full" in server.log()
    spooled = sum(f.stat().st_size for f in (model_home / "spool").rglob("*.parquet"))
    assert 0 < spooled <= bound  # what the spool held stays for the next run on this host
    for f in (model_home / "spool").iterdir():  # leave the next test a clean spool
        import shutil

        shutil.rmtree(f)
    assert os.listdir(model_home / "spool") == []
