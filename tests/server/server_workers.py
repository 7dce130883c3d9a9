"""Client processes of the server tests, run as scripts: ``python server_workers.py <task>
'<json arguments>'``. Each imports everything, touches its ``ready`` file, waits for the ``go``
file so that all start together, runs its task through ``MODELLOOP_STORE_URL`` (a server) and
prints one JSON line with its result."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from modelloop import Client, Settings
from modelloop.tracking._run import ActiveRun


def _wait_for_go(ready: str, go: str) -> None:
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 120 s")
        time.sleep(0.002)


def log_metrics(a: dict[str, Any]) -> dict[str, Any]:
    """Log ``count`` values of one key into an existing run, buffered (one request per flush)."""
    client = Client(Settings.from_env())
    run = ActiveRun(client, client.get_run(a["run_id"]), flush_every=a["flush_every"])
    _wait_for_go(a["ready"], a["go"])
    for i in range(a["count"]):
        run.log_metric(f"w{a['worker']}", float(i), step=i)
    run.flush()
    client.close()
    return {"logged": a["count"]}


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]](json.loads(sys.argv[2]))), flush=True)
