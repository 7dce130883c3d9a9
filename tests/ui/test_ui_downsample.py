"""Server-side downsampling of metric series: bounded size, extremes and ends kept, NaN gaps
kept; and the series endpoint of a real ``modelloop ui`` process serving it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ui_support import http_get, start_ui

from modelloop.ui import downsample


def test_small_series_pass_through_unchanged() -> None:
    x, y = downsample([0, 1, 2], [3.0, 1.0, 2.0], 10)
    assert x.tolist() == [0, 1, 2] and y.tolist() == [3.0, 1.0, 2.0]


def test_large_series_keep_every_bucket_extreme_and_both_ends() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(0, 1, len(steps))
    values[12_345] = 50.0  # one spike up, one down: both must survive
    values[87_654] = -50.0
    x, y = downsample(steps, values, 1000)
    assert len(x) <= 1000
    assert x[0] == 0 and x[-1] == 99_999
    assert 12_345 in x.tolist() and 87_654 in x.tolist()
    assert y.max() == 50.0 and y.min() == -50.0
    assert np.all(np.diff(x) > 0)  # still ordered by step
    assert np.array_equal(values[x], y)  # only real points, none invented


def test_nan_only_buckets_stay_visible_as_gaps() -> None:
    values = np.ones(10_000)
    values[4000:6000] = np.nan
    _, y = downsample(np.arange(10_000), values, 100)
    assert np.isnan(y).any()
    assert np.nanmax(y) == 1.0


def test_too_few_points_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        downsample([0, 1, 2, 3, 4], [1.0] * 5, 3)


def test_series_endpoint_downsamples_and_zooms(tmp_path: Path) -> None:
    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.store import Metric

    home = tmp_path / "home"
    client = Client(Settings(home=home))
    try:
        with client.start_run("curves", name="long") as run:
            values = np.sin(np.arange(20_000) / 500.0)
            values[7_777] = 9.0
            client.store.log_metrics(
                run.run_id, [Metric("loss", float(v), s) for s, v in enumerate(values)]
            )
    finally:
        client.close()
    server = start_ui(home)
    try:
        base = f"{server.url}/api/runs/{run.run_id}/metric"
        status, _, body = http_get(f"{base}?key=loss&points=500")
        assert status == 200
        data = json.loads(body)
        assert data["total"] == 20_000 and len(data["x"]) <= 500
        assert 7_777 in data["x"] and max(data["y"]) == 9.0
        status, _, body = http_get(f"{base}?key=loss&points=500&min_step=7000&max_step=7200")
        zoom = json.loads(body)
        assert zoom["x"] == list(range(7000, 7201)) and zoom["total"] == 201  # full detail
        status, _, body = http_get(f"{base}?key=loss&points=2")
        assert status == 400 and b"points=2" in body
        status, _, body = http_get(f"{server.url}/api/runs/{'f' * 32}/metric?key=loss")
        assert status == 404
    finally:
        server.stop()
    assert server.proc.returncode is not None
