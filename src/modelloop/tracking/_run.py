"""An active run: params, tags, buffered metrics, artifacts and models logged from user code."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from modelloop.exceptions import InvalidInput
from modelloop.store import Metric, Run, RunStatus
from modelloop.tracking._liveness import open_runs

R = TypeVar("R")

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.models import Signature
    from modelloop.store import Dataset, RunArtifact

__all__ = ["ActiveRun"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ActiveRun:
    """A run being recorded. Use it as a context manager::

        with client.start_run(experiment="flights") as run:
            run.log_params({"max_depth": 6})
            run.log_metric("auc", 0.91)

    Metrics are buffered and written in batches: when ``flush_every`` values are waiting, every
    ``flush_interval`` seconds from a background timer, on :meth:`flush`, and when the run ends.
    Every method is thread-safe. Leaving the ``with`` block normally marks the run FINISHED; an
    exception marks it FAILED (KeyboardInterrupt: KILLED) after flushing what was logged.

    While the run is open, this process refreshes its heartbeat every 30 seconds. A run never
    ended, even one whose object was dropped, is flushed and ended when the interpreter exits
    (FINISHED, or FAILED after an unhandled exception). A process killed outright leaves its
    run RUNNING: reads report it as stale (``Run.stale``) and ``modelloop runs gc`` ends it.
    """

    def __init__(
        self,
        client: Client,
        run: Run,
        *,
        flush_every: int = 1000,
        flush_interval: float = 5.0,
    ) -> None:
        if flush_every < 1:
            raise InvalidInput(f"flush_every must be >= 1, got {flush_every}")
        self._client = client
        self._store = client.store
        self.run_id: str = run.run_id
        self.experiment_id: int = run.experiment_id
        self.name: str = run.name
        self._flush_every = flush_every
        self._flush_interval = flush_interval
        self._buffer: list[Metric] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing = False  # no more metrics accepted
        self._ended = False  # the store has the final status
        open_runs.add(self)

    def __repr__(self) -> str:
        return f"ActiveRun(run_id={self.run_id!r}, name={self.name!r})"

    # -- params and tags ---------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Record one param; logging it again with another value raises ``Conflict``."""
        self._store.log_params(self.run_id, {key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record several params in one transaction."""
        self._store.log_params(self.run_id, params)

    def set_tag(self, key: str, value: str) -> None:
        """Set one tag (overwrites)."""
        self._store.set_tags(self.run_id, {key: str(value)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags (overwrites)."""
        self._store.set_tags(self.run_id, {k: str(v) for k, v in tags.items()})

    # -- metrics -----------------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int = 0, *, timestamp: int | None = None
    ) -> None:
        """Buffer one metric value. ``InvalidInput`` names a bad key, value, step or timestamp."""
        ts = _now_ms() if timestamp is None else _integer(key, "timestamp", timestamp)
        if type(key) is str and key and type(value) is float and type(step) is int:
            metric = Metric(key, value, step, ts)  # the common case, already what it must be
        else:
            metric = _metric(key, value, step, ts)
        self._append([metric])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Buffer several metric values sharing one step and timestamp."""
        ts = _now_ms()
        self._append([_metric(key, value, step, ts) for key, value in metrics.items()])

    def log_batch(self, metrics: Sequence[Metric]) -> None:
        """Write many metric values now, in one transaction (all or none), bypassing the buffer."""
        with self._lock:
            if self._closing:
                raise InvalidInput(f"run {self.run_id} has ended; it takes no more metrics")
        self.flush()  # keep the order of values logged before
        self._store.log_metrics(self.run_id, list(metrics))

    def _append(self, metrics: list[Metric]) -> None:
        with self._lock:
            if self._closing:
                raise InvalidInput(f"run {self.run_id} has ended; it takes no more metrics")
            self._buffer.extend(metrics)
            full = len(self._buffer) >= self._flush_every
            if self._timer is None and self._flush_interval > 0:
                self._start_timer()
        if full:
            self.flush()

    def flush(self) -> int:
        """Write buffered metrics now; return how many were written."""

        def write(batch: list[Metric]) -> int:
            self._store.log_metrics(self.run_id, batch)
            return len(batch)

        return self._drain(write) or 0

    def _drain(self, write: Callable[[list[Metric]], R]) -> R | None:
        """``write(batch)`` of the buffered values (None when there are none); if it raises,
        the batch goes back into the buffer, so a later write can retry and nothing is lost."""
        with self._flush_lock:  # keeps batches in order when the timer and a caller race
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return None
            try:
                return write(batch)
            except BaseException:
                with self._lock:
                    self._buffer[:0] = batch
                raise

    def _start_timer(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self._flush_interval):
                try:
                    self.flush()
                except Exception:  # retried at the next tick and at the end of the run
                    continue

        self._timer = threading.Thread(
            target=loop, name=f"modelloop-flush-{self.run_id[:8]}", daemon=True
        )
        self._timer.start()

    # -- artifacts, models, datasets ---------------------------------------------------------

    def log_artifact(
        self, local_path: str | Path, artifact_path: str | None = None
    ) -> list[RunArtifact]:
        """Store a file (or every file of a directory) as an artifact of this run."""
        return self._client.log_artifact(self.run_id, local_path, artifact_path)

    def log_model(
        self,
        model: Any,
        name: str = "model",
        *,
        input_example: pd.DataFrame | None = None,
        signature: Signature | None = None,
        metadata: Mapping[str, Any] | None = None,
        serialization: str = "skops",
        training_data: pd.DataFrame | None = None,
        categorical: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        unseen: str = "accept",
    ) -> str:
        """Save ``model`` as a model package (skops, signature, metadata) under artifact path
        ``name``; return its URI ``runs:/<run_id>/<name>``. Pass ``training_data`` (the inputs
        the model was fitted on) for string columns to get categories; see
        :meth:`modelloop.Client.log_model`."""
        return self._client.log_model(
            self.run_id,
            model,
            name,
            input_example=input_example,
            signature=signature,
            metadata=metadata,
            serialization=serialization,
            training_data=training_data,
            categorical=categorical,
            unseen=unseen,
        )

    def log_dataset(
        self, df: pd.DataFrame, name: str, *, role: str = "train", source: str = ""
    ) -> Dataset:
        """Snapshot a DataFrame (digest, schema, profile) and link it to this run in ``role``."""
        return self._client.log_dataset(self.run_id, df, name, role=role, source=source)

    # -- lifecycle ---------------------------------------------------------------------------

    def end(self, status: RunStatus = RunStatus.FINISHED) -> Run:
        """Flush metrics and close the run with a final status.

        If buffered metrics cannot be written the run is still closed, as FAILED, and the write
        error is raised. Ending an ended run returns it unchanged.
        """
        with self._lock:
            if self._ended:
                return self._store.get_run(self.run_id)
            self._closing = True
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        flush_error: Exception | None = None
        run = self._end_with_buffer(status)
        if run is None:  # the values could not go with the end: flush them alone, then end
            try:
                self.flush()
            except Exception as exc:
                flush_error, status = exc, RunStatus.FAILED
            run = self._store.end_run(self.run_id, status)  # on failure it can be ended again
        with self._lock:
            self._ended = True
        open_runs.discard(self)
        if flush_error is not None:
            raise flush_error
        return run

    def _end_with_buffer(self, status: RunStatus) -> Run | None:
        """End the run with the buffered values in the same write (one request through a
        control plane); None, with the values back in the buffer, when there were none or that
        write failed (neither the values nor the end were stored)."""
        try:
            return self._drain(
                lambda batch: self._store.end_run(self.run_id, status, metrics=batch)
            )
        except Exception:
            return None

    def info(self) -> Run:
        """The run as stored now (buffered metrics flushed first)."""
        self.flush()
        return self._store.get_run(self.run_id)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end(RunStatus.FINISHED)
            return
        status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
        try:
            # The run's own error matters more than a failure to record it as a tag.
            with contextlib.suppress(Exception):
                self.set_tag("modelloop.error", f"{exc_type.__name__}: {exc}"[:4000])
            self.end(status)
        except Exception as record_error:  # never hide the user's exception behind ours
            if exc is not None:
                exc.add_note(f"modelloop could not close run {self.run_id}: {record_error!r}")


def _metric(key: str, value: Any, step: Any, timestamp: int) -> Metric:
    if not key or not isinstance(key, str):
        raise InvalidInput(f"metric key must be a non-empty string, got {key!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"metric {key!r}: value {value!r} is not a number") from None
    return Metric(key, v, _integer(key, "step", step), timestamp)


def _integer(key: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidInput(f"metric {key!r}: {what} {value!r} is not a whole number")
    return int(value)
