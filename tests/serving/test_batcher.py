"""The micro-batcher on its own: predict functions stand in for a model."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from modelloop.serving._batcher import Batcher
from modelloop.serving._errors import ModelRejectedInput, Overloaded, PredictionFailed


def _columns(values: list[float]) -> dict[str, list[Any]]:
    return {"x": list(values)}


def test_unloading_mid_batch_answers_every_request() -> None:
    def slow(columns: dict[str, list[Any]], rows: int) -> tuple[Any, Any]:
        time.sleep(0.5)
        return np.asarray(columns["x"]), None

    async def scenario() -> list[Any]:
        batcher = Batcher(slow, columns=["x"], max_batch_rows=2, max_delay_s=0)
        batcher.start()
        calls = [asyncio.create_task(batcher.submit(_columns([i]), 1)) for i in range(5)]
        await asyncio.sleep(0.1)  # the first batch is being predicted
        await batcher.close(timeout_s=0.05)
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=5)

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 5
    assert all(isinstance(o, Overloaded) for o in outcomes), outcomes


def test_a_refused_input_is_isolated_and_a_model_failure_fails_the_batch_once() -> None:
    calls: list[int] = []
    batches: list[int] = []

    def picky(columns: dict[str, list[Any]], rows: int) -> tuple[Any, Any]:
        calls.append(rows)
        if -1 in columns["x"]:
            raise ModelRejectedInput("the model could not predict this input: -1")
        if 99 in columns["x"]:
            raise PredictionFailed("the model failed")
        return np.asarray(columns["x"]) * 2, None

    async def burst(values: list[int]) -> list[Any]:
        batcher = Batcher(
            picky, columns=["x"], max_batch_rows=64, max_delay_s=0.05, on_batch=batches.append
        )
        batcher.start()
        batcher._last_rows = len(values)  # as if the last batch had that many rows
        tasks = [asyncio.create_task(batcher.submit(_columns([v]), 1)) for v in values]
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return out

    values = list(range(16))
    values[5] = -1
    outcomes = asyncio.run(burst(values))
    assert isinstance(outcomes[5], ModelRejectedInput)
    assert [o.prediction.tolist() for i, o in enumerate(outcomes) if i != 5] == [
        [2 * v] for i, v in enumerate(values) if i != 5
    ]
    assert len(calls) <= 2 * 4 + 1  # halving: a few calls, not one per request
    assert batches == [16]  # the retries are not counted as batches

    calls.clear()
    batches.clear()
    outcomes = asyncio.run(burst([99, *range(15)]))
    assert all(isinstance(o, PredictionFailed) for o in outcomes)
    assert calls == [16]  # the model's own failure is not retried request by request


@pytest.mark.parametrize("rows, expected_calls", [(40, [16, 16, 8]), (16, [16]), (5, [5])])
def test_a_large_request_is_predicted_in_chunks_of_the_bulk_size(
    rows: int, expected_calls: list[int]
) -> None:
    calls: list[int] = []

    def echo(columns: dict[str, list[Any]], n: int) -> tuple[Any, Any]:
        calls.append(n)
        return np.asarray(columns["x"]), np.asarray([[v, -v] for v in columns["x"]])

    async def scenario() -> Any:
        batcher = Batcher(echo, columns=["x"], max_batch_rows=8, bulk_chunk_rows=16, max_delay_s=0)
        batcher.start()
        result = await batcher.submit(_columns(list(range(rows))), rows)
        await batcher.close()
        return result

    result = asyncio.run(scenario())
    assert calls == expected_calls  # no 8-row slices: chunks of the bulk size
    assert result.prediction.tolist() == list(range(rows))
    assert result.proba[:, 1].tolist() == [-v for v in range(rows)]


def test_single_rows_are_answered_while_a_large_request_is_being_predicted() -> None:
    """The large request's chunk cannot finish until the single rows are answered: on one
    shared lane this never happens (the test fails on its timeout)."""
    singles_done = threading.Event()
    threads: dict[str, set[str]] = {"small": set(), "bulk": set()}

    def model(columns: dict[str, list[Any]], n: int) -> tuple[Any, Any]:
        if n > 8:
            threads["bulk"].add(threading.current_thread().name)
            if not singles_done.wait(10):
                raise PredictionFailed("the single rows were not answered meanwhile")
        else:
            threads["small"].add(threading.current_thread().name)
        return np.asarray(columns["x"]) * 2, None

    async def scenario() -> tuple[Any, list[Any], list[str]]:
        batcher = Batcher(model, columns=["x"], max_batch_rows=8, max_delay_s=0)
        batcher.start()
        finished: list[str] = []

        async def tracked(label: str, values: list[int]) -> Any:
            result = await batcher.submit(_columns(values), len(values))
            finished.append(label)
            return result

        big = asyncio.create_task(tracked("big", list(range(1000))))
        await asyncio.sleep(0.05)  # the large request is being predicted
        singles = [asyncio.create_task(tracked(f"s{i}", [i])) for i in range(20)]
        single_results = await asyncio.wait_for(asyncio.gather(*singles), 10)
        singles_done.set()
        big_result = await asyncio.wait_for(big, 10)
        await batcher.close()
        return big_result, single_results, finished

    big, singles, finished = asyncio.run(scenario())
    assert finished[-1] == "big" and len(finished) == 21  # every single row answered first
    assert [r.prediction.tolist() for r in singles] == [[2 * i] for i in range(20)]
    assert big.prediction.tolist() == [2 * v for v in range(1000)]
    # the two lanes predict on threads of their own
    assert threads["small"] and threads["bulk"] and not threads["small"] & threads["bulk"]


def test_large_requests_take_turns_chunk_by_chunk() -> None:
    """A smaller large request sent after a huge one is answered before the huge one ends."""
    order: list[int] = []

    def model(columns: dict[str, list[Any]], n: int) -> tuple[Any, Any]:
        order.append(columns["x"][0])
        time.sleep(0.01)
        return np.asarray(columns["x"]), None

    async def scenario() -> list[str]:
        batcher = Batcher(model, columns=["x"], max_batch_rows=4, bulk_chunk_rows=10, max_delay_s=0)
        batcher.start()
        finished: list[str] = []

        async def tracked(label: str, values: list[int]) -> None:
            result = await batcher.submit(_columns(values), len(values))
            assert result.prediction.tolist() == values
            finished.append(label)

        huge = asyncio.create_task(tracked("huge", list(range(100))))
        await asyncio.sleep(0)  # the huge one is queued first
        small = asyncio.create_task(tracked("small", list(range(1000, 1020))))
        await asyncio.gather(huge, small)
        await batcher.close()
        return finished

    finished = asyncio.run(scenario())
    assert finished == ["small", "huge"]
    # chunks alternate: huge, small, huge, small, then the rest of huge
    assert order[:4] == [0, 1000, 10, 1010]
    assert order[4:] == list(range(20, 100, 10))


def test_large_requests_are_admitted_by_their_own_lane_limit() -> None:
    """Two 2,000-row requests fit a bulk lane of 40,000 rows although the small lane holds 2,048;
    past the bulk lane's limit a request is refused at once with Retry-After."""
    release = threading.Event()

    def model(columns: dict[str, list[Any]], n: int) -> tuple[Any, Any]:
        release.wait(10)
        return np.zeros(n), None

    async def scenario() -> tuple[list[Any], Any]:
        batcher = Batcher(
            model, columns=["x"], max_batch_rows=64, max_queue_rows=2048, max_bulk_rows=5000
        )
        batcher.start()
        rows = list(range(2000))
        first = [asyncio.create_task(batcher.submit(_columns(rows), 2000)) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = asyncio.create_task(batcher.submit(_columns(rows), 2000))
        refused = await asyncio.gather(third, return_exceptions=True)
        release.set()
        answered = await asyncio.wait_for(asyncio.gather(*first, return_exceptions=True), 10)
        await batcher.close()
        return answered, refused[0]

    answered, refused = asyncio.run(scenario())
    assert [len(r.prediction) for r in answered] == [2000, 2000]
    assert isinstance(refused, Overloaded) and refused.retry_after >= 1
    assert "large-request queue is full" in str(refused)
