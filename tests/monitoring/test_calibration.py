"""History-calibrated drift: normal ranges learned from past healthy windows, season-aligned."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from seasonal_support import T0, reference, stream

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    CalibratedDrift,
    DriftCalibration,
    DriftMonitor,
    ReferenceProfile,
    calibrate,
    calibrate_frame,
)

N = 1_000


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return ReferenceProfile.from_frame(reference(0))


@pytest.fixture(scope="module")
def calibration(profile) -> DriftCalibration:
    # one week of healthy hourly windows after the two reference days
    return calibrate(profile, stream(1, 7 * 24, N, start_hour=48), season="hour")


def test_seasonal_stream_fixed_threshold_alarms_calibrated_does_not(profile, calibration) -> None:
    monitor = DriftMonitor().fit(profile)
    test = stream(2, 48, N, start_hour=9 * 24, change=9 * 24 + 24, drift=0.3)
    fixed, calibrated = [], []
    for start, data in test:
        drift = monitor.test(data)
        fixed.append(bool(drift.drifted_columns))
        calibrated.append(bool(calibration.judge(drift, start).flagged_columns))
    healthy, drifted = slice(0, 24), slice(24, 48)
    assert np.mean(fixed[healthy]) > 0.9  # the hour moves the inputs: a fixed rule flags it
    assert np.mean(calibrated[healthy]) <= 0.05  # at most 1 healthy window of 24
    assert calibrated[drifted].index(True) <= 2  # found within two windows of the change
    assert np.mean(calibrated[drifted]) > 0.9


def test_every_column_states_distance_learned_range_and_verdict(profile, calibration) -> None:
    start, data = stream(3, 1, N, start_hour=10 * 24 + 3, change=0, drift=0.5)[0]
    result = calibration.judge(DriftMonitor().fit(profile).test(data), start)
    assert result.season == "hour" and result.slot == 3
    x0, x5 = result["x0"], result["x5"]
    assert x0.flagged and x0.verdict == "above its normal range" and x0.distance > x0.high
    assert not x5.flagged and x5.low <= x5.distance <= x5.high and x5.verdict == "normal"
    assert x0.n_windows == 7  # one past window per day at 03:00
    assert {"x0", "x1"} <= set(result.flagged_columns)
    again = CalibratedDrift.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and result.to_dict()["share_flagged"] == result.share_flagged


def test_calibration_round_trips_and_falls_back_to_pooled_ranges(profile, calibration) -> None:
    text = json.dumps(calibration.to_dict(), allow_nan=False)
    assert DriftCalibration.from_dict(json.loads(text)) == calibration
    assert len(text) < 100_000  # ranges, not distances of every window
    # two past days only: fewer than 3 windows per hour, so every slot falls back
    short = calibrate(profile, stream(4, 48, N, start_hour=48), season="hour")
    start, data = stream(5, 1, N, start_hour=72)[0]
    result = short.judge(DriftMonitor().fit(profile).test(data), start)
    assert all("range learned from all of them" in c.note for c in result.columns)
    assert all(c.n_windows == 48 for c in result.columns)


def test_calibrate_frame_cuts_a_historical_dataset_by_time(profile) -> None:
    parts = [d.assign(ts=pd.Timestamp(t) + pd.Timedelta(minutes=1)) for t, d in stream(
        6, 4 * 24, 300, start_hour=48)]  # fmt: skip
    history = pd.concat(parts, ignore_index=True)
    cal = calibrate_frame(profile, history, timestamp="ts", freq="1h", season="hour")
    assert cal.n_windows == 96 and cal.window == "1h"
    assert cal.columns["x0"].slots[5].n_windows == 4
    # calendar months: windows start on the first of each month, whatever its length
    spread = history.assign(ts=pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(
        np.arange(len(history)) * 3_000, unit="s"))  # fmt: skip
    months = calibrate_frame(profile, spread, timestamp="ts", freq="MS", min_windows=2)
    assert months.n_windows == spread.ts.dt.strftime("%Y-%m").nunique() >= 3


def test_bad_settings_are_refused(profile) -> None:
    with pytest.raises(InvalidInput, match="unknown season"):
        calibrate(profile, stream(7, 5, 100), season="minute")
    with pytest.raises(InvalidInput, match="at least 3 past windows"):
        calibrate(profile, stream(7, 2, 100))
    with pytest.raises(InvalidInput, match="timestamp column"):
        calibrate_frame(profile, reference(0).head(10))
    cal = calibrate(profile, stream(8, 5, 200), season="hour")
    with pytest.raises(InvalidInput, match="start time"):
        cal.judge(DriftMonitor().fit(profile).test(stream(9, 1, 200)[0][1]), None)
    other = DriftMonitor(numeric_method="wasserstein").fit(profile).test(stream(9, 1, 200)[0][1])
    with pytest.raises(InvalidInput, match="calibrated on ks_effect"):
        cal.judge(other, T0)
