"""Several processes logging through the buffered tracking API at once, on every backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from modelloop import Client, Settings

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
