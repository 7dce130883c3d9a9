"""Run owners, heartbeats and stale runs: judged on read, ended by ``end_stale_runs``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from modelloop.exceptions import InvalidInput
from modelloop.store import Experiment, RunOwner, RunStatus
from modelloop.store._owner import STALE_AFTER_MS, current_owner
from modelloop.store._sql import SqlStore
from modelloop.store._sql._core import now_ms

OTHER_HOST = RunOwner(host="another-machine.example", pid=4242, process_key="")


def _owner_of_an_ended_process() -> RunOwner:
    """The owner record of a real process of this machine that has exited (and been reaped)."""
    code = (
        "import json; from modelloop.store._owner import current_owner; o = current_owner(); "
        "print(json.dumps([o.host, o.pid, o.process_key]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    host, pid, key = json.loads(out)
    return RunOwner(host, pid, key)


def test_a_run_records_its_owner_and_first_heartbeat(store: SqlStore, exp: Experiment) -> None:
    me = current_owner()
    run = store.create_run(exp.experiment_id, owner=me, start_time=1_000)
    got = store.get_run(run.run_id)
    assert got.owner == me and got.owner.pid == os.getpid()
    assert got.heartbeat_at == 1_000 and run.heartbeat_at == 1_000
    # This process is alive: however old the heartbeat, its run is not stale.
    assert got.stale is False and got.state == "RUNNING"
    plain = store.get_run(store.create_run(exp.experiment_id).run_id)
    assert plain.owner is None and plain.heartbeat_at is None and not plain.stale


def test_invalid_owner_is_refused(store: SqlStore, exp: Experiment) -> None:
    for bad in (RunOwner("", 1), RunOwner("h", "1"), RunOwner("h", 1, "k" * 500), ("h", 1)):
        with pytest.raises(InvalidInput, match="owner"):
            store.create_run(exp.experiment_id, owner=bad)  # type: ignore[arg-type]
    assert len(store.search_runs([exp.experiment_id])) == 0


def test_heartbeat_refreshes_running_runs_only(store: SqlStore, exp: Experiment) -> None:
    a = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=1_000)
    b = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=1_000)
    store.end_run(b.run_id, RunStatus.FINISHED, end_time=2_000)
    assert store.heartbeat_runs([a.run_id, b.run_id, "0" * 32], now=5_000) == 1
    assert store.get_run(a.run_id).heartbeat_at == 5_000
    assert store.get_run(b.run_id).heartbeat_at == 1_000
    assert store.heartbeat_runs([]) == 0
    with pytest.raises(InvalidInput, match="run id"):
        store.heartbeat_runs([1])  # type: ignore[list-item]


def test_a_run_of_another_machine_is_stale_after_the_heartbeat_timeout(
    store: SqlStore, exp: Experiment
) -> None:
    now = now_ms()
    silent = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=now - 3_600_000)
    beating = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=now - 3_600_000)
    store.heartbeat_runs([silent.run_id], now=now - STALE_AFTER_MS - 60_000)
    store.heartbeat_runs([beating.run_id])
    ownerless_old = store.create_run(exp.experiment_id, start_time=now - 3_600_000)
    ownerless_new = store.create_run(exp.experiment_id)
    found = {r.run_id: r for r in store.search_runs([exp.experiment_id])}
    assert found[silent.run_id].stale and found[silent.run_id].state == "STALE"
    assert found[silent.run_id].status is RunStatus.RUNNING  # the stored status is unchanged
    assert not found[beating.run_id].stale
    assert found[ownerless_old.run_id].stale and not found[ownerless_new.run_id].stale
    assert store.get_run(silent.run_id).stale


def test_a_run_whose_process_on_this_machine_ended_is_stale_at_once(
    store: SqlStore, exp: Experiment
) -> None:
    gone = store.create_run(exp.experiment_id, owner=_owner_of_an_ended_process())
    assert store.get_run(gone.run_id).stale  # its heartbeat is fresh: the process decides


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times: Linux")
def test_a_reused_pid_does_not_keep_a_run_alive(store: SqlStore, exp: Experiment) -> None:
    me = current_owner()
    machine, _, start = me.process_key.rpartition("/")
    earlier = RunOwner(me.host, me.pid, f"{machine}/{int(start) - 1}")  # same pid, not us
    run = store.create_run(exp.experiment_id, owner=earlier)
    assert store.get_run(run.run_id).stale


def test_end_stale_runs_ends_only_stale_runs(store: SqlStore, exp: Experiment) -> None:
    now = now_ms()
    dead = store.create_run(exp.experiment_id, owner=_owner_of_an_ended_process())
    silent = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=now - 3_600_000)
    store.heartbeat_runs([silent.run_id], now=now - 600_000)
    alive = store.create_run(exp.experiment_id, owner=current_owner(), start_time=1_000)
    finished = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=1_000)
    store.end_run(finished.run_id, RunStatus.FINISHED, end_time=2_000)

    ended = store.end_stale_runs(now=now)
    assert sorted(r.run_id for r in ended) == sorted([dead.run_id, silent.run_id])
    by_id = {r.run_id: store.get_run(r.run_id) for r in (dead, silent, alive, finished)}
    assert by_id[dead.run_id].status is RunStatus.FAILED and not by_id[dead.run_id].stale
    assert by_id[dead.run_id].end_time == by_id[dead.run_id].heartbeat_at  # last sign of life
    assert by_id[silent.run_id].end_time == now - 600_000
    assert (
        "process 4242 on host another-machine.example"
        in by_id[silent.run_id].tags["modelloop.stale_reason"]
    )
    assert by_id[alive.run_id].status is RunStatus.RUNNING
    assert by_id[finished.run_id].status is RunStatus.FINISHED
    assert by_id[finished.run_id].end_time == 2_000
    assert store.end_stale_runs(now=now) == []  # nothing left to end


def test_end_stale_runs_with_a_shorter_timeout_and_status(store: SqlStore, exp: Experiment) -> None:
    now = now_ms()
    run = store.create_run(exp.experiment_id, owner=OTHER_HOST, start_time=now - 10_000)
    assert store.end_stale_runs(RunStatus.KILLED, now=now) == []  # within the default timeout
    (ended,) = store.end_stale_runs(RunStatus.KILLED, stale_after_ms=5_000, now=now)
    assert ended.run_id == run.run_id and ended.status is RunStatus.KILLED
    assert ended.end_time == now - 10_000
    with pytest.raises(InvalidInput, match="RUNNING"):
        store.end_stale_runs(RunStatus.RUNNING)
    with pytest.raises(InvalidInput, match="stale_after_ms"):
        store.end_stale_runs(stale_after_ms=-1)
