"""The per-part pipeline of batch scoring: the check of text columns on their distinct values
gives the signature's own frame, the writer thread keeps the input's order and row ids, and an
error while writing surfaces in the job and leaves no part behind."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scoring_support import FEATURES, flights_frame, flights_home, known_rows, with_bad_rows

from modelloop import Client
from modelloop.exceptions import StoreError
from modelloop.models import ColumnSpec, Signature
from modelloop.scoring._inputs import find_inputs, open_fs, plan_parts
from modelloop.scoring._job import _model_source
from modelloop.scoring._runner import Runner, _Behind, score_part
from modelloop.scoring._validate import split_valid, valid_whole


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    home = tmp_path_factory.mktemp("pipeline") / "mlhome"
    with flights_home(home) as client:
        yield client


@pytest.fixture(scope="module")
def flights(pipeline_home: Client) -> pd.DataFrame:
    """8,000 flights rows the model knows, with an ``id``, and three rows it refuses (ids 3,
    1,500 and 7,777)."""
    frame = known_rows(flights_frame(10_000), pipeline_home, "flights@champion").head(8_000)
    frame["id"] = np.arange(len(frame))
    frame, _bad = with_bad_rows(frame)
    return frame


def _signature(client: Client) -> Signature:
    source, _ = _model_source(client, "flights@champion", None)
    return Runner.signature_of(source)


def test_text_columns_checked_on_distinct_values_give_the_signatures_frame(
    pipeline_home: Client,
) -> None:
    signature = _signature(pipeline_home)
    good = known_rows(flights_frame(2_000, seed=5), pipeline_home, "flights@champion")
    table = pa.Table.from_pandas(good[FEATURES], preserve_index=False)
    frame = table.to_pandas()
    whole = valid_whole(table, frame, signature)
    assert whole is not None
    pd.testing.assert_frame_equal(whole, signature.validate(frame[signature.columns]))

    # a refused value anywhere: no whole-batch answer, and split_valid finds the same rows
    bad = good.copy()
    bad.loc[17, "carrier"] = "ZZ"
    bad.loc[1_234, "dest"] = None
    table = pa.Table.from_pandas(bad[FEATURES], preserve_index=False)
    frame = table.to_pandas()
    assert valid_whole(table, frame, signature) is None
    fast = split_valid(frame, signature, None, table)
    slow = split_valid(frame, signature)
    pd.testing.assert_frame_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    assert fast[2] == slow[2]
    assert sorted(fast[2]) == [17, 1_234]
    assert "unknown category 'ZZ'" in fast[2][17][1]

    # text without categories, missing values allowed: the signature's own check runs
    open_text = Signature(inputs=(ColumnSpec("note", "string", nullable=True),))
    for values in (["a", None, "b"], ["a", "b", "a"]):
        table = pa.table({"note": pa.array(values)})
        frame = table.to_pandas()
        whole = valid_whole(table, frame, open_text)
        assert whole is not None
        pd.testing.assert_frame_equal(whole, open_text.validate(frame))


def _parts(client: Client, data: Path, part_rows: int) -> list:
    signature = _signature(client)
    files = find_inputs(str(data))
    fs, _ = open_fs(str(data))
    return plan_parts(fs, files, [*signature.columns, "id"], part_rows)


def _one_part(client: Client, flights: pd.DataFrame, tmp_path: Path) -> tuple[Any, Any]:
    """The flights rows as one Parquet file of 1,000-row groups, its one part, and the source
    of flights@champion."""
    data = tmp_path / "in"
    data.mkdir()
    flights.to_parquet(data / "flights.parquet", row_group_size=1_000, index=False)
    (part,) = _parts(client, data, part_rows=10_000)
    source, _ = _model_source(client, "flights@champion", None)
    return part, source


def test_the_writer_thread_keeps_the_inputs_order_and_row_ids(
    pipeline_home: Client, flights: pd.DataFrame, tmp_path: Path
) -> None:
    part, source = _one_part(pipeline_home, flights, tmp_path)
    runner = Runner(source)
    fs, _ = open_fs(str(tmp_path))
    out = tmp_path / "out"
    result = score_part(
        runner,
        part,
        in_fs=fs,
        out_fs=fs,
        out_path=str(out),
        batch_rows=97,  # 31 batches: the reader and the writer threads run ahead and behind
        keep=["id"],
    )
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (8_000, 7_997, 3)
    assert sorted(int(r["source_row"]) for r in _jsonl(out)) == [3, 1_500, 7_777]
    (written,) = sorted(out.glob("part-*.parquet"))
    got = pd.read_parquet(written)  # as written, not sorted
    kept = flights.drop(index=[3, 1_500, 7_777])
    # the input's order, each row with its own row number, id and prediction
    np.testing.assert_array_equal(got["source_row"].to_numpy(), kept.index.to_numpy())
    np.testing.assert_array_equal(got["id"].to_numpy(), kept["id"].to_numpy())
    model = pipeline_home.load_model("models:/flights@champion").model
    proba = model.predict_proba(kept[FEATURES])
    np.testing.assert_allclose(got[["proba_0", "proba_1"]].to_numpy(), proba, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), proba.argmax(axis=1))


def _jsonl(out: Path) -> list[dict]:
    lines: list[dict] = []
    for path in sorted((out / "_rejected").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_an_error_in_the_writer_thread_surfaces_and_leaves_no_part(
    pipeline_home: Client, flights: pd.DataFrame, tmp_path: Path
) -> None:
    part, source = _one_part(pipeline_home, flights, tmp_path)
    # a signature whose class labels are text while the model predicts 0/1: the writer thread
    # cannot put the predictions in the output's text column
    doc = json.loads(source.signature_json)
    doc["classes"] = ["on time", "late"]
    runner = Runner(dataclasses.replace(source, signature_json=json.dumps(doc)))
    fs, _ = open_fs(str(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(StoreError, match=rf"scoring .*flights.parquet \(part {part.key}\) failed"):
        score_part(runner, part, in_fs=fs, out_fs=fs, out_path=str(out), batch_rows=97)
    # nothing at all: no part, no temporary file, no side file of refused rows
    assert sorted(p.name for p in out.rglob("*")) == []


def test_the_writer_keeps_order_and_hands_its_first_error_to_the_caller() -> None:
    written: list[int] = []
    behind = _Behind(written.append, depth=2)
    for i in range(500):
        behind.put(i)
    behind.finish()
    assert written == list(range(500))

    def fail_at_7(item: int) -> None:
        if item == 7:
            raise ValueError("cannot write item 7")
        written.append(item)

    written.clear()
    behind = _Behind(fail_at_7, depth=2)
    with pytest.raises(ValueError, match="cannot write item 7"):
        for i in range(500):
            behind.put(i)
        behind.finish()
    assert written == list(range(7))  # nothing after the failed item is written
    behind.abandon()
