"""The ops history on a shared (S3) log root: a real moto server, real ``modelloop serve``
processes recording with ``--ops-interval 1``, read back by ``modelloop ops history`` from the
partitioned layout, compared with a run on the local layout; ``since`` opens only its hours."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from s3log_support import LOG_BUCKET, RestartableS3
from serving.serving_support import Server, post_many, register_rf, row_records, start_server

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

PREDICT = "/v1/models/cancer/predict"
KEY = re.compile(
    r"^(?P<prefix>[^/]+)/ops/model=cancer/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<ns>\d{20})-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})-(?P<seq>\d{8})"
    r"\.parquet$"
)
START = datetime(2026, 11, 3, tzinfo=UTC)
DAYS = 3


@pytest.fixture(scope="module")
def s3() -> Iterator[RestartableS3]:
    server = RestartableS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _send(server: Server, n: int) -> None:
    records = row_records(20)
    bodies = [{"records": [records[i % 20]]} for i in range(n)]
    replies = post_many([f"{server.url}{PREDICT}"] * n, bodies, concurrency=4)
    assert [r.status_code for r in replies] == [200] * n, replies[0].text


def _ops_history_json(home: Path, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    full = {k: v for k, v in os.environ.items() if k != "MODELLOOP_LOG_ROOT"}
    out = subprocess.run(
        [sys.executable, "-m", "modelloop", "ops", "history", "cancer", "--json", *args],
        env={**full, "MODELLOOP_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def _serve(home: Path, env: dict[str, str], sends: list[int]) -> list[Server]:
    """One replica per entry of ``sends``, each sent that many requests over a few intervals,
    then stopped (SIGTERM: each writes the history it holds)."""
    import time

    servers: list[Server] = []
    try:
        for _ in sends:
            servers.append(
                start_server(home, ["cancer@champion"], "--ops-interval", "1", "--no-log", env=env)
            )
        for _ in range(3):  # spread over several intervals
            for server, n in zip(servers, sends, strict=True):
                _send(server, n // 3 + (n % 3 if _ == 0 else 0))
            time.sleep(1.2)
    finally:
        codes = [s.terminate() for s in servers]
    assert codes == [0] * len(servers), [s.log() for s in servers]
    return servers


@pytest.mark.slow
def test_served_ops_history_lands_on_the_shared_root_and_reads_back_like_the_local_one(
    s3: RestartableS3, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("ops-root")
    local_home, shared_home = base / "local", base / "shared"
    register_rf(local_home)
    register_rf(shared_home)
    env = s3.env(prefix="served")

    _serve(local_home, {}, [30])
    _serve(shared_home, env, [30, 21])  # two replicas of one model, one root

    keys = [k for k in s3.objects() if k.startswith("served/ops/")]
    assert keys, "no ops history in the bucket"
    parsed = [KEY.match(k) for k in keys]
    assert all(parsed), keys
    replicas = {(m["pid"], m["token"]) for m in parsed if m is not None}
    assert len(replicas) == 2  # both replicas wrote their own segments
    assert not (shared_home / "ops").exists()  # nothing under the home
    assert (local_home / "ops" / "cancer").is_dir()
    # the spools were emptied at shutdown
    assert not list((shared_home / "spool").rglob("*.parquet"))

    local = _ops_history_json(local_home, {})
    shared = _ops_history_json(shared_home, env)
    assert list(shared[0]) == list(local[0])  # the same columns, in the same order
    assert sum(r["requests"] for r in local) == 30
    assert sum(r["requests"] for r in shared) == 51  # both replicas' rows are read
    assert {r["model"] for r in shared} == {"cancer"}
    stamps = [r["timestamp"] for r in shared]
    assert stamps == sorted(stamps)
    # one row per replica per interval: about twice the intervals of one server
    assert len(shared) >= len(local) + 2
    assert all(r["errors_4xx"] == 0 and r["errors_5xx"] == 0 for r in shared)

    # the forecast's demand counts both replicas' requests
    from modelloop.aiops import demand_from_history, read_ops_history

    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        frame = read_ops_history("cancer", home=shared_home)
    demand = demand_from_history(frame, step_s=3600)
    starts = frame["timestamp"] - pd.to_timedelta(frame["interval_s"], unit="s")
    for label, rate in demand.items():
        rows = frame[(starts >= label) & (starts < label + pd.Timedelta(hours=1))]
        # the step's requests of both replicas over the wall-clock seconds they covered
        # (counting each replica's seconds would halve it)
        expected = rows["requests"].sum() / _union_seconds(rows)
        # (the reader forgives overlaps under 1 % of an interval or 50 ms as clock jitter, which
        # this count does not: a loaded machine moves the two by a few per cent)
        assert rate == pytest.approx(expected, rel=0.05)
    assert sum(
        rate * _union_seconds(frame[(starts >= t) & (starts < t + pd.Timedelta(hours=1))])
        for t, rate in demand.items()
    ) == pytest.approx(51, rel=0.05)


def _union_seconds(frame: pd.DataFrame) -> float:
    end = frame["timestamp"].astype("int64").to_numpy() / 1e3  # ms
    begin = end - frame["interval_s"].to_numpy(dtype=float)
    spans = sorted(zip(begin, end, strict=True))
    total, reach = 0.0, -np.inf
    for b, e in spans:
        if e > reach:
            total += e - max(b, reach)
            reach = e
    return total


def three_days() -> pd.DataFrame:
    """A history of one row per 10 minutes over three days (one segment per hour on S3)."""
    n = DAYS * 24 * 6
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "timestamp": [START + timedelta(minutes=10 * (i + 1)) for i in range(n)],
            "interval_s": 600.0,
            "requests": rng.integers(0, 500, n),
            "errors_4xx": 0,
            "errors_5xx": rng.integers(0, 3, n),
            "rejected": 0,
            "latency_p50_ms": rng.normal(20, 2, n),
            "queue_depth": rng.integers(0, 5, n),
            "rss_bytes": 200_000_000,
        }
    )


@pytest.fixture(scope="module")
def written(s3: RestartableS3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a home whose log root is the S3 prefix ``days``, a home with the same history local)."""
    from modelloop._logroot import close_sinks
    from modelloop.aiops import write_ops_history

    base = tmp_path_factory.mktemp("ops-days")
    shared, local = base / "shared", base / "local"
    frame = three_days()
    write_ops_history(local, "cancer", frame)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.env(prefix="days").items():
            mp.setenv(k, v)
        url = write_ops_history(shared, "cancer", frame)
        assert url == f"s3://{LOG_BUCKET}/days/ops/model=cancer"
        close_sinks()
    return shared, local


@pytest.fixture
def days_env(s3: RestartableS3) -> Iterator[dict[str, str]]:
    env = s3.env(prefix="days")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def test_since_opens_only_the_hours_it_covers(
    written: tuple[Path, Path], s3: RestartableS3, days_env: dict[str, str]
) -> None:
    from modelloop._logroot import SharedRoot
    from modelloop.aiops import read_ops_history
    from modelloop.aiops._history import _read_shared

    keys = [k for k in s3.objects() if k.startswith("days/ops/")]
    assert len(keys) == DAYS * 24 + 1  # one segment per hour (the last row: midnight)

    import s3fs

    opened: list[str] = []

    class CountingS3(s3fs.S3FileSystem):  # type: ignore[misc]
        def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
            opened.append(path)
            return super()._open(path, *args, **kwargs)

    root = SharedRoot(
        days_env["MODELLOOP_LOG_ROOT"], filesystem=CountingS3(skip_instance_cache=True)
    )
    since = START + timedelta(days=2, hours=21, minutes=30)  # the last 2.5 hours
    frame = _read_shared(root, "cancer", since.isoformat(), None, None)
    assert len(frame) == 16  # 21:30 (since is inclusive) ... 00:00: sixteen 10-minute rows
    hours = {re.search(r"date=[\d-]+/hour=\d{2}", p).group(0) for p in opened}  # type: ignore[union-attr]
    assert hours == {
        "date=2026-11-05/hour=21",
        "date=2026-11-05/hour=22",
        "date=2026-11-05/hour=23",
        "date=2026-11-06/hour=00",  # the last row, stamped at midnight
    }
    assert len(set(opened)) == 4  # of 73 segments

    # the public reader gives the frame the local layout gives
    shared_home, local_home = written
    got = read_ops_history("cancer", since.isoformat(), home=shared_home)
    pd.testing.assert_frame_equal(got, frame)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MODELLOOP_LOG_ROOT")
        expected = read_ops_history("cancer", since.isoformat(), home=local_home)
        whole = read_ops_history("cancer", home=local_home, columns=["requests"])
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(
        read_ops_history("cancer", home=shared_home, columns=["requests"]), whole
    )
    # a window with no rows is an empty frame of the same columns, not an error
    later = read_ops_history("cancer", "2027-01-01T00:00Z", home=shared_home)
    assert later.empty and list(later.columns) == list(expected.columns)
    assert later.dtypes.equals(expected.dtypes)


def test_a_model_without_history_on_the_root_is_named(
    written: tuple[Path, Path], days_env: dict[str, str]
) -> None:
    from modelloop.aiops import read_ops_history
    from modelloop.exceptions import NotFound

    with pytest.raises(NotFound, match=r"s3://modelloop-logs/days/ops/model=other"):
        read_ops_history("other", home=written[0])


def test_ops_anomalies_reads_the_shared_root(
    written: tuple[Path, Path], days_env: dict[str, str]
) -> None:
    """``modelloop ops anomalies`` on the S3 root scans the whole history, as on the local one."""
    shared_home, local_home = written
    base = {k: v for k, v in os.environ.items() if k != "MODELLOOP_LOG_ROOT"}

    def run(home: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "modelloop", "ops", *args, "cancer", "--json"],
            env={**base, "MODELLOOP_HOME": str(home), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    scan_shared = run(shared_home, days_env, "anomalies")
    scan_local = run(local_home, {}, "anomalies")
    assert scan_shared["rows"] == scan_local["rows"] == DAYS * 24 * 6
    assert scan_shared["anomalies"] == scan_local["anomalies"]


def test_replicas_rows_add_up_in_the_demand() -> None:
    """Two replicas recording the same wall-clock time: their requests add up, the seconds
    count once; one replica alone gives its own rate."""
    from modelloop.aiops import demand_from_history

    t0 = pd.Timestamp("2026-11-01", tz="UTC")
    one = pd.DataFrame(
        {
            "timestamp": [t0 + pd.Timedelta(seconds=10 * (i + 1)) for i in range(360)],
            "requests": 50,
            "interval_s": 10.0,
        }
    )
    other = pd.DataFrame(
        {
            "timestamp": [t0 + pd.Timedelta(seconds=10 * (i + 1) + 3.7) for i in range(360)],
            "requests": 20,
            "interval_s": 10.0,
        }
    )
    assert demand_from_history(one, step_s=300).tolist() == [5.0] * 12
    both = demand_from_history(pd.concat([one, other]).sort_values("timestamp"), step_s=300)
    assert both.iloc[1:-1].tolist() == pytest.approx([7.0] * 10)  # 5 + 2 requests/s
    # unsorted rows (replicas' segments read in any order) give the same series
    shuffled = pd.concat([other, one]).reset_index(drop=True)
    pd.testing.assert_series_equal(demand_from_history(shuffled, step_s=300), both)


def test_ops_rows_wait_in_the_spool_while_the_root_is_down(tmp_path: Path) -> None:
    """The recorder writes through the log root's sink: while the root is down its segment
    waits in the home's spool, and goes up when the root answers again."""
    import time

    from modelloop._logroot import close_sinks
    from modelloop.aiops import OpsRecorder, read_ops_history

    server = RestartableS3()
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in server.env(prefix="outage").items():
                mp.setenv(k, v)
            rec = OpsRecorder(tmp_path, interval_s=1.0)
            rec.add_model("cancer")
            rec.request("cancer", "champion", 200, 0.01)
            server.stop()
            rec.tick()
            rec.flush()  # never raises: the segment is spooled
            spooled = list((tmp_path / "spool").rglob("*.parquet"))
            assert len(spooled) == 1
            assert "/ops/model=cancer/date=" in spooled[0].as_posix()
            assert not (tmp_path / "ops").exists()
            server.start()
            deadline = time.monotonic() + 30
            while list((tmp_path / "spool").rglob("*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not list((tmp_path / "spool").rglob("*.parquet"))
            keys = [k for k in server.objects() if k.startswith("outage/ops/")]
            assert len(keys) == 1 and KEY.match(keys[0])
            assert read_ops_history("cancer", home=tmp_path)["requests"].tolist() == [1]
            close_sinks()
    finally:
        close_sinks()
        server.stop()
