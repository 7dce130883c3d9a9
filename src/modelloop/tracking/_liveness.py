"""The runs this process has open: their heartbeat while it lives, their end when it exits.

One daemon thread per process refreshes the heartbeat of every open run (one UPDATE per store
every :data:`modelloop.store._owner.HEARTBEAT_INTERVAL_S` seconds), so that readers on other
machines can tell a live run from one whose process died. When the interpreter exits, every run
still open is flushed and ended, including runs whose :class:`ActiveRun` object the caller
dropped without ending it: the registry holds them strongly for that. A process killed outright
(SIGKILL, power loss) ends nothing; its runs are reported stale and ``modelloop runs gc`` ends them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING

from modelloop.store import RunStatus, _owner

if TYPE_CHECKING:
    from modelloop.store import Store
    from modelloop.tracking._run import ActiveRun

__all__ = ["open_runs"]


class _OpenRuns:
    """A thread-safe set of the open runs of this process, with their heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, ActiveRun] = {}
        self._thread: threading.Thread | None = None

    def add(self, run: ActiveRun) -> None:
        with self._lock:
            self._runs[id(run)] = run
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat_forever, name="modelloop-heartbeat", daemon=True
                )
                self._thread.start()

    def discard(self, run: ActiveRun) -> None:
        with self._lock:
            self._runs.pop(id(run), None)

    def snapshot(self) -> list[ActiveRun]:
        with self._lock:
            return list(self._runs.values())

    def beat(self) -> None:
        """Refresh the heartbeat of every open run now, one statement per store."""
        by_store: dict[int, tuple[Store, list[str]]] = {}
        for run in self.snapshot():
            by_store.setdefault(id(run._store), (run._store, []))[1].append(run.run_id)
        for store, ids in by_store.values():
            # A failed beat is retried at the next one; readers wait ten beats before judging.
            with contextlib.suppress(Exception):
                store.heartbeat_runs(ids)

    def _beat_forever(self) -> None:
        wait = threading.Event().wait
        while True:
            wait(_owner.HEARTBEAT_INTERVAL_S)  # read each time: tests shorten it
            self.beat()

    def end_all(self) -> None:
        """End every open run (at exit): FAILED if the interpreter is exiting on an unhandled
        exception, else FINISHED."""
        status = RunStatus.FAILED if getattr(sys, "last_value", None) else RunStatus.FINISHED
        for run in self.snapshot():
            with contextlib.suppress(Exception):
                run.end(status)

    def _forget_after_fork(self) -> None:
        # A forked child owns none of its parent's runs and has no heartbeat thread.
        self._lock = threading.Lock()
        self._runs = {}
        self._thread = None


open_runs = _OpenRuns()
atexit.register(open_runs.end_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=open_runs._forget_after_fork)
