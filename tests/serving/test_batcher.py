"""The micro-batcher on its own: predict functions stand in for a model."""

from __future__ import annotations

import asyncio
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


@pytest.mark.parametrize("rows, expected_calls", [(64, [8] * 8), (5, [5])])
def test_no_call_is_larger_than_the_maximum(rows: int, expected_calls: list[int]) -> None:
    calls: list[int] = []

    def echo(columns: dict[str, list[Any]], n: int) -> tuple[Any, Any]:
        calls.append(n)
        return np.asarray(columns["x"]), np.asarray([[v, -v] for v in columns["x"]])

    async def scenario() -> Any:
        batcher = Batcher(echo, columns=["x"], max_batch_rows=8, max_delay_s=0)
        batcher.start()
        result = await batcher.submit(_columns(list(range(rows))), rows)
        await batcher.close()
        return result

    result = asyncio.run(scenario())
    assert calls == expected_calls
    assert result.prediction.tolist() == list(range(rows))
    assert result.proba[:, 1].tolist() == [-v for v in range(rows)]
