"""A real Prometheus scraping a real ``modelloop serve``: ``--prometheus`` gives the same
operational series as the history the server records itself (within scrape alignment and the
precision of the latency histogram's buckets), and a Prometheus that is not there, or not a
Prometheus, is a clear error naming the URL and the query."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from modelloop.aiops import read_ops_history, read_prometheus_history
from modelloop.aiops._history import FAULT_FILE_ENV
from modelloop.exceptions import ServiceUnavailable
from s3_support import free_port
from serving.serving_support import Server, register_mixed, start_server

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no prometheus binary (Debian package prometheus) on PATH"
    ),
]

ROW = {"amount": 101.5, "count": 3, "flag": True, "city": "paris"}
STEP = 1.0  # the server's ops interval, the scrape interval and the step read back
FAULT_MS = 600  # well above what a busy shared machine adds


@dataclass
class Run:
    server: Server
    prometheus: str  # its URL
    ok: int = 0
    bad: int = 0
    too_large: int = 0
    begin: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    fault_start: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    fault_end: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))


def _start_prometheus(folder: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {STEP:g}s\n"
        f"  scrape_timeout: {STEP:g}s\n"
        "scrape_configs:\n"
        "  - job_name: modelloop\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}"


def _wait_for_scrapes(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until Prometheus is ready and holds a few samples of the server's model gauge."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            query = 'count_over_time(modelloop_serving_model_version{model="mixed"}[1m])'
            r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2)
            result = r.json()["data"]["result"] if r.status_code == 200 else []
            if result and float(result[0]["value"][1]) >= 3:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(
        "Prometheus did not scrape the server:\n" + log.read_text(errors="replace")
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    folder = tmp_path_factory.mktemp("prom")
    home = folder / "home"
    register_mixed(home)
    fault = folder / "fault-ms"
    server = start_server(
        home,
        ["mixed@champion"],
        "--ops-interval", str(STEP),
        "--reload-interval", "0",
        "--max-rows", "5",
        env={FAULT_FILE_ENV: str(fault)},
    )  # fmt: skip
    prom: subprocess.Popen[bytes] | None = None
    try:
        prom, url = _start_prometheus(folder, server.port)
        _wait_for_scrapes(url, prom, folder / "prometheus.log")
        out = Run(server, url)
        predict = "/v1/models/mixed/predict"
        with httpx.Client(base_url=server.url, timeout=60) as http:

            def send_for(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    r = http.post(predict, json={"records": [ROW]})
                    assert r.status_code == 200, r.text
                    out.ok += 1
                    time.sleep(0.02)

            send_for(8.0)
            for _ in range(4):
                r = http.post(predict, json={"records": [{**ROW, "amount": "x"}]})
                assert r.status_code in (400, 422), r.text
                out.bad += 1
            for _ in range(3):
                r = http.post(predict, json={"records": [ROW] * 6})
                assert r.status_code == 413, r.text
                out.too_large += 1
            fault.write_text(str(FAULT_MS))
            time.sleep(2 * STEP)  # the recorder reads the fault file once per interval
            out.fault_start = pd.Timestamp.now(tz="UTC")
            send_for(7.0)
            out.fault_end = pd.Timestamp.now(tz="UTC")
            fault.unlink()
            time.sleep(2 * STEP)
            send_for(6.0)
        time.sleep(4 * STEP)  # the last counts scraped, the last interval closed
        yield out
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            try:
                prom.wait(30)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(10)
        server.terminate()


@pytest.fixture(scope="module")
def both(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the history read from Prometheus, the one the server recorded), over the same span."""
    since = run.begin - pd.Timedelta(seconds=30)
    from_prom = read_prometheus_history("mixed", run.prometheus, since.isoformat(), step_s=STEP)
    assert run.server.terminate() == 0, run.server.log()  # writes the rows it still holds
    recorded = read_ops_history("mixed", since.isoformat(), home=run.server.home)
    return from_prom, recorded


def test_counts_are_the_same(run: Run, both: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from_prom, recorded = both
    assert list(from_prom.columns) == list(recorded.columns)
    sent = run.ok + run.bad + run.too_large
    # counters read at each step and differenced: every request counted once, as recorded
    assert int(recorded["requests"].sum()) == sent
    assert int(from_prom["requests"].sum()) == sent
    assert int(from_prom["errors_4xx"].sum()) == int(recorded["errors_4xx"].sum())
    assert int(from_prom["errors_4xx"].sum()) == run.bad + run.too_large
    assert int(from_prom["errors_5xx"].sum()) == int(recorded["errors_5xx"].sum()) == 0
    assert int(from_prom["rejected"].sum()) == int(recorded["rejected"].sum()) == run.too_large
    # the same series in time: at each Prometheus step, the requests counted so far differ
    # from the recorded ones by no more than two intervals' worth (scrapes and intervals are
    # not aligned)
    steps = from_prom["timestamp"].diff().dt.total_seconds().dropna()
    assert steps.max() == pytest.approx(STEP) and steps.min() == pytest.approx(STEP)
    cum_prom = from_prom.set_index("timestamp")["requests"].cumsum()
    cum_rec = recorded.set_index("timestamp")["requests"].cumsum()
    at = cum_rec.reindex(cum_prom.index, method="ffill").fillna(0)
    busiest = max(int(recorded["requests"].max()), int(from_prom["requests"].max()))
    assert (cum_prom - at).abs().max() <= 2 * busiest, (cum_prom - at).abs().max()


def test_latency_cpu_and_memory_agree(run: Run, both: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from_prom, recorded = both
    margin = pd.Timedelta(seconds=3 * STEP)

    def phases(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        busy = frame[frame["requests"] > 0]
        inside = busy["timestamp"].between(run.fault_start + margin, run.fault_end)
        outside = (busy["timestamp"] < run.fault_start - margin) | (
            busy["timestamp"] > run.fault_end + margin
        )
        return busy[inside]["latency_p95_ms"], busy[outside]["latency_p95_ms"]

    prom_fault, prom_normal = phases(from_prom)
    rec_fault, rec_normal = phases(recorded)
    assert len(prom_fault) >= 3 and len(prom_normal) >= 5, from_prom
    # in the fault every request waits FAULT_MS: both see it (the histogram's bucket of 500 to
    # 1000 ms bounds Prometheus' precision), and both see normal traffic well below it (how far
    # below depends on the machine: a shared one is slow)
    assert rec_fault.median() >= FAULT_MS
    assert 500 <= prom_fault.median() <= 1000, prom_fault.tolist()
    assert rec_normal.median() < FAULT_MS / 2
    assert prom_normal.median() < FAULT_MS / 2, prom_normal.tolist()
    # a band around the recorded p95 in normal traffic: the buckets are 2 to 2.5 times apart
    ratio = prom_normal.median() / rec_normal.median()
    assert 1 / 3 <= ratio <= 3, (prom_normal.median(), rec_normal.median())
    # one process: its memory is the same in both, its CPU busy in both
    assert from_prom["rss_bytes"].median() == pytest.approx(recorded["rss_bytes"].median(), rel=0.2)
    assert from_prom["cpu_percent"].max() > 0 and recorded["cpu_percent"].max() > 0
    assert from_prom["batch_size"].dropna().ge(1).all()
    assert len(from_prom["batch_size"].dropna()) >= len(prom_normal)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelloop", "ops", *args],
        env={**os.environ, "MODELLOOP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_reads_prometheus(run: Run, both: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from_prom, _ = both
    since = (run.begin - pd.Timedelta(seconds=30)).isoformat()
    out = _cli(run.server.home, "history", "mixed", "--prometheus", run.prometheus,
               "--since", since, "--step", str(STEP), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    # the server is stopped now: Prometheus still holds what it scraped
    assert sum(r["requests"] for r in rows) == int(from_prom["requests"].sum())
    out = _cli(run.server.home, "anomalies", "mixed", "--prometheus", run.prometheus,
               "--since", since, "--step", str(STEP), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    scan = json.loads(out.stdout)
    assert scan["rows"] == len(rows)
    slow = [
        a
        for a in scan["anomalies"]
        if a["series"].startswith("latency")
        and pd.Timestamp(a["start"]) <= run.fault_end + pd.Timedelta(seconds=3 * STEP)
        and pd.Timestamp(a["end"]) >= run.fault_start
    ]
    assert slow, scan["anomalies"]


def test_alert_rule_reads_prometheus(run: Run, both: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The ops anomaly rule of ``monitor run`` (``--anomaly-prometheus``) scans the history
    Prometheus holds; an unreachable one fails the run clearly instead of looking quiet."""
    from modelloop.aiops import OpsAnomalyRule
    from modelloop.monitoring import MonitorResult

    rule = OpsAnomalyRule(since="15m", prometheus=run.prometheus, step_s=STEP)
    condition = rule.evaluate(MonitorResult("mixed", timestamp=1))
    assert condition is not None  # None: no history found, the rule keeps its state
    assert condition.message  # firing or not, it says which
    nobody = OpsAnomalyRule(since="15m", prometheus=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        nobody.evaluate(MonitorResult("mixed", timestamp=2))


def test_unreachable_or_wrong_prometheus_is_a_clear_error(run: Run) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable, match="did not answer") as err:
        read_prometheus_history("mixed", nobody, "10m", step_s=STEP)
    assert nobody in str(err.value) and "modelloop_serving_" in str(err.value)
    out = _cli(run.server.home, "history", "mixed", "--prometheus", nobody, "--since", "10m")
    assert out.returncode == 13, out.stderr
    assert nobody in out.stderr and "query" in out.stderr
    # a server that is not Prometheus: it answers, but not the API
    not_prometheus = run.server.home / "not-prometheus"
    not_prometheus.mkdir(exist_ok=True)
    with subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port := free_port()), "--bind", "127.0.0.1"],
        cwd=not_prometheus,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as other:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "http.server did not start"
                    time.sleep(0.1)
            with pytest.raises(ServiceUnavailable, match="refused the query") as err:
                read_prometheus_history("mixed", url, "10m", step_s=STEP)
            assert f"{url}/api/v1/query_range" in str(err.value)
            assert "HTTP 501" in str(err.value)
        finally:
            other.terminate()
            other.wait(10)
