"""Adaptive micro-batching: concurrent requests for one model version predicted in one call.

One :class:`Batcher` per loaded model version. Requests wait in a bounded queue; a single
worker task takes everything waiting (never more than ``max_batch_rows`` rows), predicts it in
one call on the model's own thread, and hands each request its slice of the result. While one
batch is being predicted the next one gathers, so batches grow with load on their own. When
fewer rows wait than the last batch held, the worker also waits up to ``max_delay_s`` for the
batch to grow back to that size; a lone client never pays that wait.

A full queue raises :class:`~modelloop.serving._errors.Overloaded` at once (503 + Retry-After),
so latency stays bounded instead of growing with the backlog.
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


#: ``predict(columns, n_rows) -> (prediction, proba or None)`` over a merged batch.
PredictFn = Callable[[dict[str, list[Any]], int], tuple[Any, Any]]


class Batcher:
    """Gathers requests for one model version into batches and predicts them on one thread."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        columns: Sequence[str],
        max_batch_rows: int = 64,
        max_delay_s: float = 0.002,
        max_queue_rows: int = 2048,
        batching: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_rows < 1 or max_queue_rows < 1:
            raise InvalidInput("max_batch_rows and max_queue_rows must be at least 1")
        if max_delay_s < 0:
            raise InvalidInput("max_delay_s must not be negative")
        self._predict = predict
        self._columns = list(columns)
        self.max_batch_rows = max_batch_rows if batching else 1
        self.max_delay_s = max_delay_s if batching else 0.0
        self.max_queue_rows = max(max_queue_rows, max_batch_rows)
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_rows = 1  # rows in the last batch: how many clients are likely waiting
        self._inflight: list[_Item] = []  # the batch being predicted

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def depth(self) -> int:
        """Rows waiting to be predicted."""
        return self._queued_rows

    async def close(self, timeout_s: float = 30.0) -> None:
        """Predict what is queued (for at most ``timeout_s``), then stop the worker and thread."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        # the batch being predicted when time ran out, and whatever still waits, get an answer
        for item in [*self._inflight, *self._queue]:
            if not item.future.done():
                item.future.set_exception(
                    Overloaded("the model was unloaded before answering; retry", retry_after=1)
                )
        self._inflight = []
        self._queue.clear()
        self._executor.shutdown(wait=False)

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, columns: dict[str, list[Any]], n_rows: int) -> BatchResult:
        """Predict ``n_rows`` rows; ``Overloaded`` at once if the queue cannot take them."""
        if self._closing:
            raise Overloaded("the model is being unloaded; retry", retry_after=1)
        # A big request counts as at most half the queue when it is admitted, so it gets in
        # whenever the queue is no more than half full: a retry after a 503 can succeed even
        # under steady small traffic, and a request bigger than the queue is never refused
        # forever.
        cost = min(n_rows, max(1, self.max_queue_rows // 2))
        if self._queued_rows and self._queued_rows + cost > self.max_queue_rows:
            raise Overloaded(
                f"the queue is full ({self._queued_rows} rows waiting, at most "
                f"{self.max_queue_rows}); retry shortly",
                retry_after=1,
            )
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(columns, n_rows, future))
        self._queued_rows += n_rows
        if self._on_depth is not None:
            self._on_depth(self._queued_rows)
        self._wake.set()
        return await future

    # -- the worker --------------------------------------------------------------------------

    def _take(self) -> list[_Item]:
        """Pop requests while they fit in one batch; a request larger than a batch goes alone."""
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
        if self._on_depth is not None:
            self._on_depth(self._queued_rows)
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
        try:
            prediction, proba = await self._predict_rows(loop, merged, rows, count=first)
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

    async def _predict_rows(
        self,
        loop: asyncio.AbstractEventLoop,
        columns: dict[str, list[Any]],
        rows: int,
        *,
        count: bool = True,
    ) -> tuple[Any, Any]:
        """One call per ``max_batch_rows`` rows: a request larger than a batch is predicted in
        slices, so no call ever exceeds the maximum."""
        size = self.max_batch_rows if self.max_batch_rows > 1 or rows == 1 else rows
        if rows <= size:
            if self._on_batch is not None and count:
                self._on_batch(rows)
            return await loop.run_in_executor(self._executor, self._predict, columns, rows)
        import numpy as np

        predictions, probas = [], []
        for start in range(0, rows, size):
            end = min(rows, start + size)
            part = {c: v[start:end] for c, v in columns.items()}
            p, q = await self._predict_rows(loop, part, end - start, count=count)
            predictions.append(p)
            probas.append(q)
        proba = None if probas[0] is None else np.concatenate(probas)
        return np.concatenate(predictions), proba


def _resolve(item: _Item, result: BatchResult) -> None:
    if not item.future.done():  # the client may have gone away
        item.future.set_result(result)


def _fail(item: _Item, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
