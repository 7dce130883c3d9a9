"""Adaptive micro-batching in two lanes: small requests batched together, large ones in chunks.

One :class:`Batcher` per loaded model version, with two lanes that predict on threads of their
own, so neither waits for the other:

- **The small lane.** Requests of at most ``max_batch_rows`` rows wait in a bounded queue; a
  worker task takes everything waiting (never more than ``max_batch_rows`` rows), predicts it in
  one call, and hands each request its slice of the result. While one batch is being predicted
  the next one gathers, so batches grow with load on their own. When fewer rows wait than the
  last batch held, the worker also waits up to ``max_delay_s`` for the batch to grow back to that
  size; a lone client never pays that wait.
- **The bulk lane.** A request larger than a batch is predicted in chunks of up to
  ``bulk_chunk_rows`` rows — large enough to run close to the model's in-process speed, small
  enough that no call holds the interpreter for long. Requests in this lane take turns chunk by
  chunk, so a small bulk request is not stuck behind a huge one, and single rows keep flowing
  through the small lane meanwhile.

Each lane has its own row limit; a full lane raises :class:`~modelloop.serving._errors.Overloaded`
at once (503 + Retry-After), so latency stays bounded instead of growing with the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelloop.exceptions import InvalidInput
from modelloop.serving._errors import Overloaded

__all__ = ["BatchResult", "Batcher"]


@dataclass(slots=True)
class BatchResult:
    """One request's slice of a batch prediction."""

    prediction: Any  # np.ndarray, one entry per row
    proba: Any  # np.ndarray (rows x classes) or None


@dataclass(slots=True)
class _Item:
    columns: dict[str, list[Any]]
    n_rows: int
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)
    done_rows: int = 0  # bulk lane: rows predicted so far
    parts: list[tuple[Any, Any]] = field(default_factory=list)  # bulk lane: chunk results


#: ``predict(columns, n_rows) -> (prediction, proba or None)`` over a merged batch.
PredictFn = Callable[[dict[str, list[Any]], int], tuple[Any, Any]]

#: Rows per call in the bulk lane: past a few thousand rows a call's fixed cost is noise.
BULK_CHUNK_ROWS = 8192


class Batcher:
    """Gathers small requests into batches and predicts large ones in chunks, on two threads."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        columns: Sequence[str],
        max_batch_rows: int = 64,
        max_delay_s: float = 0.002,
        max_queue_rows: int = 2048,
        max_bulk_rows: int | None = None,
        bulk_chunk_rows: int = BULK_CHUNK_ROWS,
        batching: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_thread_start: Callable[[str], None] | None = None,
        name: str = "model",
    ) -> None:
        """``max_queue_rows`` bounds the small lane's waiting rows and ``max_bulk_rows`` the
        bulk lane's (default: ``max_queue_rows``); ``on_thread_start(lane)`` runs once on each
        lane's thread ("small" or "bulk") before its first prediction."""
        if max_batch_rows < 1 or max_queue_rows < 1 or bulk_chunk_rows < 1:
            raise InvalidInput(
                "max_batch_rows, max_queue_rows and bulk_chunk_rows must be at least 1"
            )
        if max_bulk_rows is not None and max_bulk_rows < 1:
            raise InvalidInput("max_bulk_rows must be at least 1")
        if max_delay_s < 0:
            raise InvalidInput("max_delay_s must not be negative")
        self._predict = predict
        self._columns = list(columns)
        self.max_batch_rows = max_batch_rows if batching else 1
        self.max_delay_s = max_delay_s if batching else 0.0
        self.max_queue_rows = max(max_queue_rows, max_batch_rows)
        self.max_bulk_rows = max(max_bulk_rows or max_queue_rows, self.max_batch_rows + 1)
        self.bulk_chunk_rows = max(bulk_chunk_rows, self.max_batch_rows)
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._bulk: deque[_Item] = deque()
        self._bulk_rows = 0  # rows of the bulk lane not predicted yet
        self._wake = asyncio.Event()
        self._bulk_wake = asyncio.Event()
        self._executor = _lane_executor(f"predict-{name}", on_thread_start, "small")
        self._bulk_executor = _lane_executor(f"predict-{name}-bulk", on_thread_start, "bulk")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._last_rows = 1  # rows in the last batch: how many clients are likely waiting
        self._inflight: list[_Item] = []  # the batch being predicted
        self._inflight_bulk: _Item | None = None  # the bulk request a chunk of is predicted

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lanes' worker tasks on the running event loop."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()), loop.create_task(self._run_bulk())]

    @property
    def depth(self) -> int:
        """Rows waiting to be predicted, in both lanes."""
        return self._queued_rows + self._bulk_rows

    async def close(self, timeout_s: float = 30.0) -> None:
        """Predict what is queued (for at most ``timeout_s``), then stop the workers and threads."""
        self._closing = True
        self._wake.set()
        self._bulk_wake.set()
        if self._tasks:
            both = asyncio.gather(*self._tasks)
            try:
                await asyncio.wait_for(asyncio.shield(both), timeout_s)
            except TimeoutError:
                for task in self._tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await both
        # the batch being predicted when time ran out, and whatever still waits, get an answer
        bulk = [] if self._inflight_bulk is None else [self._inflight_bulk]
        for item in [*self._inflight, *bulk, *self._queue, *self._bulk]:
            if not item.future.done():
                item.future.set_exception(
                    Overloaded("the model was unloaded before answering; retry", retry_after=1)
                )
        self._inflight, self._inflight_bulk = [], None
        self._queue.clear()
        self._bulk.clear()
        self._executor.shutdown(wait=False)
        self._bulk_executor.shutdown(wait=False)

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, columns: dict[str, list[Any]], n_rows: int) -> BatchResult:
        """Predict ``n_rows`` rows; ``Overloaded`` at once if its lane cannot take them."""
        if self._closing:
            raise Overloaded("the model is being unloaded; retry", retry_after=1)
        bulk = n_rows > self.max_batch_rows
        waiting, limit = (
            (self._bulk_rows, self.max_bulk_rows)
            if bulk
            else (self._queued_rows, self.max_queue_rows)
        )
        # A request bigger than its lane is taken whenever the lane is empty, so it is never
        # refused forever (and a retry after a 503 can succeed).
        if waiting and waiting + n_rows > limit:
            lane = "large-request queue" if bulk else "queue"
            raise Overloaded(
                f"the {lane} is full ({waiting} rows waiting, at most {limit}); retry shortly",
                retry_after=1,
            )
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        item = _Item(columns, n_rows, future)
        if bulk:
            self._bulk.append(item)
            self._bulk_rows += n_rows
            self._bulk_wake.set()
        else:
            self._queue.append(item)
            self._queued_rows += n_rows
            self._wake.set()
        self._report_depth()
        return await future

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self.depth)

    # -- the small lane ----------------------------------------------------------------------

    def _take(self) -> list[_Item]:
        """Pop requests while they fit in one batch."""
        taken: list[_Item] = []
        rows = 0
        while self._queue:
            nxt = self._queue[0]
            if nxt.future.done():  # cancelled: its caller is gone, skip the work
                self._queue.popleft()
                self._queued_rows -= nxt.n_rows
                continue
            if taken and rows + nxt.n_rows > self.max_batch_rows:
                break
            taken.append(self._queue.popleft())
            rows += nxt.n_rows
            if rows >= self.max_batch_rows:
                break
        self._queued_rows -= rows
        self._report_depth()
        return taken

    async def _gather_wait(self) -> None:
        """Wait up to max_delay_s for as many rows as the last batch had.

        Clients answered by the last batch tend to send their next request at once, so waiting
        for that many rows fills the batch without waiting out the whole delay; a lone client
        (last batch: one row) never waits.
        """
        if self.max_delay_s <= 0:
            return
        target = min(self.max_batch_rows, self._last_rows)
        deadline = self._queue[0].enqueued + self.max_delay_s
        while self._queued_rows < target and not self._closing:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather_wait()
            items = self._take()
            if not items:
                continue
            self._last_rows = sum(i.n_rows for i in items)
            self._inflight = items
            await self._predict_batch(loop, items)
            self._inflight = []

    async def _predict_batch(
        self, loop: asyncio.AbstractEventLoop, items: list[_Item], *, first: bool = True
    ) -> None:
        """Predict ``items`` together. If the model refuses one request's input, halve the batch
        until that request is alone, so it costs a few extra calls, not one per request; if the
        model itself fails, every request gets that error at once."""
        rows = sum(i.n_rows for i in items)
        if len(items) == 1:
            merged = items[0].columns
        else:
            merged = {c: [] for c in self._columns}
            for item in items:
                for c in self._columns:
                    merged[c].extend(item.columns[c])
        if first and self._on_batch is not None:
            self._on_batch(rows)
        try:
            prediction, proba = await loop.run_in_executor(
                self._executor, self._predict, merged, rows
            )
        except Exception as exc:  # each request gets the error, the worker lives on
            if len(items) == 1 or not isinstance(exc, InvalidInput):
                for item in items:
                    _fail(item, exc)
                return
            half = len(items) // 2
            await self._predict_batch(loop, items[:half], first=False)
            await self._predict_batch(loop, items[half:], first=False)
            return
        start = 0
        for item in items:
            end = start + item.n_rows
            part = BatchResult(prediction[start:end], None if proba is None else proba[start:end])
            _resolve(item, part)
            start = end

    # -- the bulk lane -----------------------------------------------------------------------

    async def _run_bulk(self) -> None:
        """Predict the bulk lane's requests one chunk at a time, taking turns."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._bulk:
                if self._closing:
                    return
                self._bulk_wake.clear()
                await self._bulk_wake.wait()
                continue
            item = self._bulk.popleft()
            left = item.n_rows - item.done_rows
            if item.future.done():  # cancelled, or failed on an earlier chunk
                self._bulk_rows -= left
                self._report_depth()
                continue
            self._inflight_bulk = item
            start = item.done_rows
            end = min(item.n_rows, start + self.bulk_chunk_rows)
            if start == 0 and end == item.n_rows:
                chunk = item.columns
            else:
                chunk = {c: v[start:end] for c, v in item.columns.items()}
            if self._on_batch is not None:
                self._on_batch(end - start)
            try:
                part = await loop.run_in_executor(
                    self._bulk_executor, self._predict, chunk, end - start
                )
            except Exception as exc:  # this request gets the error, the lane lives on
                self._inflight_bulk = None
                _fail(item, exc)
                self._bulk_rows -= left
                self._report_depth()
                continue
            self._inflight_bulk = None
            item.parts.append(part)
            item.done_rows = end
            self._bulk_rows -= end - start
            self._report_depth()
            if end < item.n_rows:
                self._bulk.append(item)  # the others' turn, then this one's next chunk
                continue
            _resolve(item, _joined(item.parts))


def _lane_executor(
    name: str, on_thread_start: Callable[[str], None] | None, lane: str
) -> ThreadPoolExecutor:
    if on_thread_start is None:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=name, initializer=on_thread_start, initargs=(lane,)
    )


def _joined(parts: list[tuple[Any, Any]]) -> BatchResult:
    if len(parts) == 1:
        return BatchResult(*parts[0])
    import numpy as np

    probas = [q for _, q in parts]
    proba = None if probas[0] is None else np.concatenate(probas)
    return BatchResult(np.concatenate([p for p, _ in parts]), proba)


def _resolve(item: _Item, result: BatchResult) -> None:
    if not item.future.done():  # the client may have gone away
        item.future.set_result(result)


def _fail(item: _Item, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
