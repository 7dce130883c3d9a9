"""Monitoring windows over a shared log root on S3 (a real moto server): pruned by the date
and hour partitions, with the same rows as the local layout; an unreachable root named."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from s3log_support import LOG_BUCKET, RestartableS3

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

MODEL = "flights"
START = datetime(2026, 11, 3, tzinfo=UTC)
DAYS = 30
PER_HOUR = 4


@pytest.fixture(scope="module")
def s3() -> Iterator[RestartableS3]:
    server = RestartableS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shared_env(s3: RestartableS3) -> Iterator[dict[str, str]]:
    env = s3.env(prefix="month")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def month_of_log() -> pd.DataFrame:
    n = DAYS * 24 * PER_HOUR
    rng = np.random.default_rng(3)
    stamps = [START + timedelta(hours=i // PER_HOUR, minutes=(i % PER_HOUR) * 15) for i in range(n)]
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "timestamp": stamps,
            "model_name": MODEL,
            "model_version": 1,
            "route": "champion",
            "distance": rng.normal(800, 200, n),
            "carrier": rng.choice(["AA", "DL", "UA"], n),
            "prediction": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def homes(s3: RestartableS3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a home whose log root is the S3 prefix, a home with the same log in the local layout)."""
    from modelloop._logroot import close_sinks
    from modelloop.monitoring import append_predictions

    base = tmp_path_factory.mktemp("log-root")
    shared, local = base / "shared", base / "local"
    frame = month_of_log()
    append_predictions(local, MODEL, frame)  # no MODELLOOP_LOG_ROOT: today's layout
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3.env(prefix="month").items():
            mp.setenv(k, v)
        append_predictions(shared, MODEL, frame)  # split by hour: one object per hour
        close_sinks()
    return shared, local


class _Opened:
    """Paths opened through an s3fs file system (the files a window reads)."""

    def __init__(self) -> None:
        self.paths: list[str] = []


def counting_filesystem(opened: _Opened) -> Any:
    import s3fs

    class CountingS3(s3fs.S3FileSystem):  # type: ignore[misc]
        def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
            opened.paths.append(path)
            return super()._open(path, *args, **kwargs)

    return CountingS3(skip_instance_cache=True)


@pytest.mark.slow
def test_a_one_hour_window_opens_only_that_hours_files(
    homes: tuple[Path, Path], s3: RestartableS3, shared_env: dict[str, str]
) -> None:
    from modelloop._logroot import SharedRoot
    from modelloop.monitoring import PredictionLog
    from modelloop.monitoring._windows import TimeRange

    keys = [k for k in s3.objects() if k.startswith("month/predictions/")]
    assert len(keys) == DAYS * 24  # one segment per hour of the month
    opened = _Opened()
    url = shared_env["MODELLOOP_LOG_ROOT"]
    root = SharedRoot(url, filesystem=counting_filesystem(opened))
    log = PredictionLog(root.url_of(root.folder("predictions", MODEL)), shared=root, model=MODEL)
    hour = START + timedelta(days=17, hours=9)
    frame = log.read(TimeRange(hour, hour + timedelta(hours=1)))
    assert len(frame) == PER_HOUR
    assert set(opened.paths) == {p for p in opened.paths if "/date=2026-11-20/hour=09/" in p}
    assert len(set(opened.paths)) == 1  # the hour's one segment, of 720

    # the same rows as the local layout gives for that window
    local = PredictionLog.for_model(homes[1], MODEL)
    opened.paths.clear()
    expected = local.read(TimeRange(hour, hour + timedelta(hours=1)))
    pd.testing.assert_frame_equal(
        frame.sort_values("request_id").reset_index(drop=True),
        expected.sort_values("request_id").reset_index(drop=True),
    )


@pytest.mark.slow
def test_windows_over_the_shared_root_match_the_local_layout(
    homes: tuple[Path, Path], shared_env: dict[str, str]
) -> None:
    from modelloop.monitoring import PredictionLog

    shared_home, local_home = homes
    now = START + timedelta(days=12, hours=5, minutes=20)
    for window in ("3h", "day-1", "10rows", "90m"):
        got = PredictionLog.for_model(shared_home, MODEL).read(window, now=now)
        want = PredictionLog.for_model(local_home, MODEL).read(window, now=now)
        assert len(got) == len(want) > 0, window
        pd.testing.assert_frame_equal(
            got.sort_values("request_id").reset_index(drop=True),
            want.sort_values("request_id").reset_index(drop=True),
        )


def test_feedback_on_the_shared_root_reaches_the_loop(
    tmp_path: Path, shared_env: dict[str, str]
) -> None:
    from modelloop._logroot import close_sinks
    from modelloop.loop._triggers import labels_since
    from modelloop.monitoring import append_feedback

    home = tmp_path / "home"
    t0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
    labels = pd.DataFrame(
        {
            "request_id": ["a", "b", "c"],
            "label": [1, 0, 1],
            "timestamp": [t0, t0 + timedelta(hours=2), t0 + timedelta(days=1)],
        }
    )
    append_feedback(home, "loopmodel", labels)
    close_sinks()
    since = int((t0 + timedelta(hours=1)).timestamp() * 1000)
    assert labels_since(home, "loopmodel", since) == 2
    assert labels_since(home, "loopmodel", None) == 3
    assert not (home / "feedback").exists()  # nothing under the local home


def test_an_unreachable_root_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: RestartableS3
) -> None:
    from modelloop.exceptions import StoreError
    from modelloop.monitoring import PredictionLog
    from s3_support import free_port

    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(StoreError) as err:
        PredictionLog.for_model(tmp_path, MODEL).read("1h")
    message = str(err.value)
    assert dead in message and LOG_BUCKET in message and "MODELLOOP_LOG_ROOT" in message


def test_a_spool_left_by_a_stopped_writer_is_uploaded_by_the_next(
    tmp_path: Path, s3: RestartableS3, shared_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelloop._logroot import SegmentSink, SharedRoot
    from modelloop.monitoring import PredictionLog
    from s3_support import free_port

    frame = month_of_log().head(8)  # two hours of rows: two segments
    table = __import__("pyarrow").Table.from_pandas(frame, preserve_index=False)
    url = shared_env["MODELLOOP_LOG_ROOT"] + "-spool"
    monkeypatch.setenv("MODELLOOP_LOG_ROOT", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # unreachable
    first = SegmentSink(SharedRoot(url, writer=True), tmp_path / "spool")
    assert first.write("predictions", MODEL, table) == 0
    assert first.spool_segments == 2 and first.upload_errors >= 1
    first.close(timeout_s=1)  # stops with the root still down: the spool stays
    assert len(list((tmp_path / "spool").rglob("*.parquet"))) == 2

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)  # the root is back
    second = SegmentSink(SharedRoot(url, writer=True), tmp_path / "spool")
    assert second.spool_segments == 2  # adopted
    assert second.drain()
    second.close()
    assert list((tmp_path / "spool").rglob("*.parquet")) == []
    got = PredictionLog.for_model(tmp_path, MODEL).read("10rows")
    assert sorted(got["request_id"]) == sorted(frame["request_id"])
