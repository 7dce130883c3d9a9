"""Several processes logging through the buffered tracking API at once, on every backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from modelloop import Client, Settings
from modelloop.store import RunStatus

WORKER = textwrap.dedent(
    """
    import modelloop
    with modelloop.start_run("parallel", flush_every=100, flush_interval=0.05) as run:
        print(run.run_id, flush=True)
        for i in range(2000):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
    """
)


def test_four_processes_log_2000_buffered_values_each(home, store_url) -> None:
    env = {**os.environ, "MODELLOOP_STORE_URL": store_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    run_ids = [out.split()[0] for out, _ in outs]
    client = Client(Settings.from_env(store_url=store_url))
    counts = [client.store.count_metric_values(r, "loss") for r in run_ids]
    assert counts == [2000] * 4 and sum(counts) == 8000
    steps = [m.step for m in client.get_metric_history(run_ids[0], "loss")]
    assert steps == list(range(2000))
    client.close()


def _child(code: str, store_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MODELLOOP_STORE_URL": store_url}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_process_leaves_a_stale_run_that_runs_gc_ends(
    home, store_url, monkeypatch
) -> None:
    import json

    from typer.testing import CliRunner

    from modelloop.cli import app

    proc = _child(
        """
        import time, modelloop
        run = modelloop.start_run("killed")
        run.log_param("depth", 3)
        print(run.run_id, flush=True)
        time.sleep(600)
        """,
        store_url,
    )
    try:
        run_id = proc.stdout.readline().strip()
        assert len(run_id) == 32, proc.stderr.read() if proc.poll() is not None else run_id
        client = Client(Settings.from_env(store_url=store_url))
        assert not client.get_run(run_id).stale  # its process is alive
    finally:
        proc.kill()  # SIGKILL: no atexit, no end_run
        proc.wait(timeout=60)
    run = client.get_run(run_id)
    assert run.status is RunStatus.RUNNING and run.stale and run.end_time is None

    monkeypatch.setenv("MODELLOOP_STORE_URL", store_url)
    cli = CliRunner()
    listed = cli.invoke(app, ["runs", "list", "-e", "killed"])
    assert listed.exit_code == 0 and "STALE" in listed.stdout, listed.output
    shown = cli.invoke(app, ["runs", "show", run_id, "--json"])
    assert json.loads(shown.stdout)["run"]["stale"] is True
    assert "STALE" in cli.invoke(app, ["runs", "show", run_id]).stdout
    gc = cli.invoke(app, ["runs", "gc", "--json"])
    assert gc.exit_code == 0, gc.output
    assert [r["run_id"] for r in json.loads(gc.stdout)["ended"]] == [run_id]

    run = client.get_run(run_id)
    assert run.status is RunStatus.FAILED and not run.stale
    assert run.end_time is not None and run.end_time >= run.start_time
    assert run.params == {"depth": "3"} and "modelloop.stale_reason" in run.tags
    client.close()


def test_a_dropped_run_object_is_ended_when_the_process_exits(home, store_url) -> None:
    clean = _child(
        """
        import gc, modelloop
        print(modelloop.start_run("dropped").run_id, flush=True)
        gc.collect()  # the run object is gone long before the process exits
        """,
        store_url,
    )
    crashing = _child(
        """
        import modelloop
        print(modelloop.start_run("dropped").run_id, flush=True)
        raise RuntimeError("boom")
        """,
        store_url,
    )
    outs = [p.communicate(timeout=120) for p in (clean, crashing)]
    assert clean.returncode == 0 and crashing.returncode == 1, outs
    client = Client(Settings.from_env(store_url=store_url))
    finished = client.get_run(outs[0][0].strip())
    failed = client.get_run(outs[1][0].strip())
    client.close()
    assert finished.status is RunStatus.FINISHED and finished.end_time is not None
    assert failed.status is RunStatus.FAILED and failed.end_time is not None


def test_an_open_run_refreshes_its_heartbeat(home, store_url) -> None:
    proc = _child(
        """
        import time, modelloop
        from modelloop.store import _owner
        _owner.HEARTBEAT_INTERVAL_S = 0.1
        with modelloop.start_run("beating") as run:
            print(run.run_id, flush=True)
            time.sleep(600)  # open until the test has seen a heartbeat
        """,
        store_url,
    )
    client = Client(Settings.from_env(store_url=store_url))
    try:
        run_id = proc.stdout.readline().strip()
        start = client.get_run(run_id).start_time
        deadline = time.monotonic() + 30
        while (beat := client.get_run(run_id).heartbeat_at) == start:
            assert time.monotonic() < deadline, "no heartbeat within 30 s"
            time.sleep(0.1)
        assert beat > start
    finally:
        proc.kill()
        proc.wait(timeout=60)
        client.close()
