"""Worker processes of the concurrency tests, run as scripts (no import path to get right).

``python _store_workers.py <task> '<json arguments>'``: the worker imports everything, touches its
``ready`` file, waits for the ``go`` file so that all workers start together, runs the task and
prints one JSON line with its result.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from modelloop.store import Metric
from modelloop.store._sql import SqlStore


def _wait_for_go(ready: str, go: str) -> None:
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 120 s")
        time.sleep(0.002)


def _log(store: SqlStore, run_id: str, worker: int, batches: int, size: int) -> None:
    for b in range(batches):
        step0 = (b * 4 + worker) * size  # disjoint steps: the latest value is predictable
        store.log_metrics(
            run_id,
            [
                Metric(f"m{i % 4}", float(worker), step0 + i, int(time.time() * 1000))
                for i in range(size)
            ],
        )


def log_metrics(a: dict[str, Any]) -> dict[str, Any]:
    """Log ``batches`` x ``size`` values into an existing run."""
    store = SqlStore(a["url"])
    _log(store, a["run_id"], a["worker"], a["batches"], a["size"])
    return {"logged": a["batches"] * a["size"]}


def fresh_database(a: dict[str, Any]) -> dict[str, Any]:
    """Open a store on a database that may have no schema yet, then create a run and log."""
    store = SqlStore(a["url"])
    exp = store.get_or_create_experiment("race")
    run = store.create_run(exp.experiment_id, name=f"worker-{a['worker']}")
    _log(store, run.run_id, a["worker"], a["batches"], a["size"])
    return {"run_id": run.run_id, "experiment_id": exp.experiment_id}


def register(a: dict[str, Any]) -> dict[str, Any]:
    store = SqlStore(a["url"])
    v = store.create_model_version(
        a["name"], source=f"worker-{a['worker']}", actor=f"w{a['worker']}"
    )
    return {"version": v.version}


def move_alias(a: dict[str, Any]) -> dict[str, Any]:
    store = SqlStore(a["url"])
    rng = random.Random(a["worker"])
    moves = []
    for _ in range(a["moves"]):
        target = rng.randint(1, a["versions"])
        before = store.set_alias(a["name"], "champion", target, actor=f"w{a['worker']}")
        moves.append([before, target])
    return {"moves": moves}


TASKS = {f.__name__: f for f in (log_metrics, fresh_database, register, move_alias)}

if __name__ == "__main__":
    task, args = sys.argv[1], json.loads(sys.argv[2])
    _wait_for_go(args["ready"], args["go"])
    print(json.dumps(TASKS[task](args)))
