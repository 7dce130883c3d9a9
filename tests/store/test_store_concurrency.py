"""Many processes on one database at once: nothing lost, nothing duplicated, no errors."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelloop.store._sql import SqlStore

WORKERS = Path(__file__).with_name("_store_workers.py")


def run_workers(task: str, args: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Start one process per argument set, release them together, return their results."""
    go = tmp_path / f"{task}.go"
    procs = []
    for i, a in enumerate(args):
        a = {**a, "ready": str(tmp_path / f"{task}.{i}.ready"), "go": str(go)}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKERS), task, json.dumps(a)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"{task}.{i}.ready").exists() for i in range(len(args))):
            dead = [p for p in procs if p.poll() not in (None, 0)]
            assert not dead, dead[0].stderr.read() if dead[0].stderr else "worker died"
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        go.touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
            assert "locked" not in err.lower(), err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_four_processes_log_into_one_run(store_url: str, tmp_path: Path) -> None:
    store = SqlStore(store_url)
    exp = store.create_experiment("shared")
    run = store.create_run(exp.experiment_id)
    args = [
        {"url": store_url, "run_id": run.run_id, "worker": w, "batches": 20, "size": 100}
        for w in range(4)
    ]
    assert run_workers("log_metrics", args, tmp_path) == [{"logged": 2000}] * 4
    assert store.count_metric_values(run.run_id) == 8000
    assert {k: store.count_metric_values(run.run_id, k) for k in ("m0", "m1", "m2", "m3")} == {
        f"m{k}": 2000 for k in range(4)
    }
    # steps are disjoint per worker; the highest belong to worker 3's last batch
    assert store.get_run(run.run_id).metrics == {f"m{k}": 3.0 for k in range(4)}
    history = store.get_metric_history(run.run_id, "m0")
    assert [m.step for m in history] == sorted(m.step for m in history)
    store.close()


def test_four_processes_race_on_a_brand_new_database(store_url: str, tmp_path: Path) -> None:
    args = [{"url": store_url, "worker": w, "batches": 20, "size": 100} for w in range(4)]
    results = run_workers("fresh_database", args, tmp_path)  # nobody created the schema before
    store = SqlStore(store_url)
    assert len({r["experiment_id"] for r in results}) == 1  # get_or_create is race-safe
    assert [e.name for e in store.list_experiments()] == ["race"]
    run_ids = [r["run_id"] for r in results]
    assert len(set(run_ids)) == 4
    assert sum(store.count_metric_values(r) for r in run_ids) == 8000
    assert all(store.count_metric_values(r) == 2000 for r in run_ids)
    store.close()


def test_eight_processes_register_one_model(store_url: str, tmp_path: Path) -> None:
    store = SqlStore(store_url)
    store.upgrade()
    args = [{"url": store_url, "name": "contested", "worker": w} for w in range(8)]
    results = run_workers("register", args, tmp_path)
    assert sorted(r["version"] for r in results) == list(range(1, 9))
    versions = store.list_model_versions("contested")
    assert [v.version for v in versions] == list(range(1, 9))
    assert sorted(v.source for v in versions) == sorted(f"worker-{w}" for w in range(8))
    assert store.get_registered_model("contested").latest_version == 8
    events = store.list_audit_events()
    assert [e.action for e in events].count("registered_model.create") == 1
    created = [e.entity_id for e in events if e.action == "model_version.create"]
    assert sorted(created) == sorted(f"contested/{v}" for v in range(1, 9))
    store.close()


def test_concurrent_alias_moves_keep_a_consistent_audit_chain(
    store_url: str, tmp_path: Path
) -> None:
    store = SqlStore(store_url)
    for _ in range(4):
        store.create_model_version("served", source="s")
    args = [
        {"url": store_url, "name": "served", "worker": w, "moves": 25, "versions": 4}
        for w in range(4)
    ]
    results = run_workers("move_alias", args, tmp_path)
    final = store.get_version_by_alias("served", "champion").version
    assert final in (1, 2, 3, 4)
    assert store.get_registered_model("served").aliases == {"champion": final}
    events = store.list_audit_events(entity_type="alias", entity_id="served@champion")
    assert len(events) == 100 and all(e.action == "alias.set" for e in events)
    assert events[0].before is None
    for prev, event in itertools.pairwise(events):
        assert event.before == prev.after
    assert events[-1].after == {"version": final}
    # what each caller was told it replaced matches the recorded history, move for move
    told = sorted((b or 0, t) for r in results for b, t in r["moves"])
    recorded = sorted(
        (0 if e.before is None else e.before["version"], e.after["version"])  # type: ignore[index]
        for e in events
    )
    assert told == recorded
    store.close()
