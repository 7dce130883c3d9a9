"""`modelloop demo loop` end to end, small: two months of flights through a real server with the
controller on, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelloop import Client, Settings


@pytest.mark.slow
def test_demo_loop_replays_through_a_server_and_writes_the_page(tmp_path: Path) -> None:
    workdir, page = tmp_path / "demo", tmp_path / "loop.html"
    env = {**os.environ, "MODELLOOP_HOME": str(tmp_path / "unused")}
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    done = subprocess.run(
        [
            sys.executable, "-m", "modelloop", "demo", "loop", "--months", "3,4",
            "--rows", "1000", "--day-seconds", "0.05", "--workdir", str(workdir),
            "--out", str(page), "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    # numbers per month, for both champions, from every flight of the sample
    for key in ("static_auc_by_month", "loop_auc_by_month"):
        assert sorted(result[key]) == ["3", "4"]
        assert all(0.6 < v < 1.0 for v in result[key].values()), result[key]
    for key in ("static_brier_by_month", "loop_brier_by_month"):
        assert all(0.0 < v < 0.25 for v in result[key].values()), result[key]
    assert result["served_rows"] == 2000 and result["failed_requests"] == 0
    assert result["rows_per_month"] == 1000 and result["months"] == [3, 4]
    assert result["retrains"] >= 1 and result["wall_s"] > 0

    # the store holds the controller's decisions, each with its evidence
    client = Client(Settings(home=workdir / "home"))
    try:
        events = client.store.list_loop_events("flights-delay")
        retrains = [e for e in events if e.kind == "retrain" and "version" in e.evidence]
        assert retrains, [(e.kind, e.message) for e in events]
        assert retrains[0].evidence["labelled_rows"] >= 2000
        assert retrains[0].evidence["status"] == "registered"
        trigger = next(e for e in events if e.kind == "trigger")
        assert trigger.evidence["fired"][0]["trigger"]
        assert any(e.kind == "stage" for e in events)
        versions = client.store.list_model_versions("flights-delay")
        assert len(versions) == 1 + result["retrains"]
    finally:
        client.close()

    # served by the real server: its prediction log holds every flight, with the canary's
    canary_days = [d for d in result["canary_share_by_day"] if d["served_canary_share"] > 0]
    assert canary_days, "no flight was answered by a canary"

    # one self-contained page: plotly inlined, the charts, every event
    text = page.read_text(encoding="utf-8")
    assert "<script src=" not in text and "Plotly" in text
    for div in ('id="auc"', 'id="brier"', 'id="canary"'):
        assert div in text
    assert text.count("<tr><td>2013-") == len(result["events"]) == len(events)
    data = json.loads(text.split("id='demo-data'>", 1)[1].split("</script>", 1)[0])
    assert data["loop_auc_by_month"] == result["loop_auc_by_month"]


def test_demo_loop_refuses_a_used_folder_before_any_work(tmp_path: Path) -> None:
    from modelloop.demo import run_loop_demo
    from modelloop.exceptions import InvalidInput

    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        run_loop_demo(used, months=[3])
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(InvalidInput, match="no folder for the page"):
        run_loop_demo(tmp_path / "new", months=[3], page=tmp_path / "missing" / "p.html")
    assert not (tmp_path / "new").exists()
    with pytest.raises(InvalidInput, match="within 3-12"):
        run_loop_demo(tmp_path / "new", months=[1, 2])
