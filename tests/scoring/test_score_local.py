"""Batch scoring with the local executor: streamed Parquet and CSV, refused rows in a side file,
restart after a crash, S3 input, the ONNX form, and errors that name what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scoring_support import (
    FEATURES,
    cli_env,
    flights_frame,
    flights_home,
    known_rows,
    read_output,
    register_numeric_model,
    with_bad_rows,
    write_parquet_files,
)

from modelloop import Client
from modelloop.exceptions import Conflict, InvalidInput, NotFound, SchemaMismatch, StoreError
from modelloop.scoring import score_batch

ROWS = 12_000


@pytest.fixture(scope="module")
def scoring_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Client]]:
    """One home for the module, with the flights model registered once as flights@champion."""
    home = tmp_path_factory.mktemp("score") / "mlhome"
    with flights_home(home) as client:
        yield home, client


@pytest.fixture(scope="module")
def inputs(
    scoring_home: tuple[Path, Client], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, pd.DataFrame, dict[int, str]]:
    """Three Parquet files of 4,000 rows (row groups of 1,000) with three refused rows."""
    _, client = scoring_home
    frame = known_rows(flights_frame(ROWS + 3_000), client, "flights@champion").head(ROWS)
    frame["id"] = np.arange(len(frame))
    frame, bad = with_bad_rows(frame)
    folder = tmp_path_factory.mktemp("input")
    write_parquet_files(folder, frame, files=3, row_group_rows=1_000)
    return folder, frame, bad


def _by_id(out: Path) -> pd.DataFrame:
    return read_output(out).sort_values("id", ignore_index=True)


def _rejected(out: Path) -> list[dict]:
    lines = []
    for path in sorted((out / "_rejected").glob("part-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_one_and_two_processes_give_the_same_complete_output(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    _, client = scoring_home
    folder, frame, bad = inputs
    one = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "one"),
        part_rows=2_000,
        batch_rows=700,
        keep=["id"],
        client=client,
    )
    two = score_batch(
        "flights@champion",
        str(folder / "*.parquet"),
        str(tmp_path / "two"),
        workers=2,
        part_rows=2_000,
        batch_rows=700,
        keep=["id"],
        client=client,
    )
    for s in (one, two):
        assert (s.files, s.parts, s.parts_done, s.parts_skipped) == (3, 6, 6, 0)
        assert (s.rows_in, s.rows_out, s.rows_rejected) == (ROWS, ROWS - 3, 3)
        assert s.form == "skops" and s.version == 1
        assert s.rejected_by_column == {"carrier": 1, "dep_delay": 1, "origin": 1}
    a, b = read_output(tmp_path / "one"), read_output(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b)
    # every input row is either scored once or refused once, never dropped
    assert sorted(a["id"]) == sorted(set(range(ROWS)) - set(bad))
    assert not a.duplicated(["source_file", "source_row"]).any()
    assert (a["model_version"] == 1).all()
    # the predictions are the model's own on the same rows
    model = client.load_model("models:/flights@champion")
    good = frame.drop(index=list(bad)).sort_values("id")
    expected = model.predict_proba(good[FEATURES])
    got = a.sort_values("id")
    np.testing.assert_allclose(got[["proba_0", "proba_1"]].to_numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), expected.argmax(axis=1))
    # a row id leads back to its input row
    row = got.iloc[123]
    source = pd.read_parquet(row["source_file"])
    assert source.iloc[row["source_row"]]["id"] == row["id"]


def test_refused_rows_are_listed_with_file_row_and_reason(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    _, client = scoring_home
    folder, _frame, bad = inputs
    summary = score_batch(
        "flights@champion", str(folder), str(tmp_path / "out"), part_rows=2_000, client=client
    )
    assert summary.rejected_path == str(tmp_path / "out" / "_rejected")
    refused = _rejected(tmp_path / "out")
    assert len(refused) == 3
    for entry in refused:
        source = pd.read_parquet(entry["source_file"])
        rid = int(source.iloc[entry["source_row"]]["id"])
        assert bad[rid] == entry["column"]
        assert entry["column"] in entry["reason"]
        assert entry["values"]["carrier"] == source.iloc[entry["source_row"]]["carrier"]
    reasons = {e["column"]: e["reason"] for e in refused}
    assert "unknown category 'ZZ'" in reasons["carrier"]
    assert "missing value" in reasons["dep_delay"]


def test_a_crash_then_a_rerun_gives_complete_output_without_duplicates(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    home, client = scoring_home
    folder, _, bad = inputs
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "modelloop",
        "score",
        "flights@champion",
        "--data",
        str(folder),
        "--out",
        str(out),
        "--part-rows",
        "2000",
        "--keep",
        "id",
        "--json",
    ]
    crashed = subprocess.run(
        args,
        env=cli_env(home, MODELLOOP_FAULT_SCORE_CRASH_AFTER_PARTS="2"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert crashed.returncode == 75, crashed.stderr
    assert len(list(out.glob("part-*.parquet"))) == 2
    assert list(out.glob(".part-*.tmp"))  # the third part was cut short: not taken as done

    rerun = subprocess.run(args, env=cli_env(home), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["parts_skipped"], summary["parts_done"], summary["parts"]) == (2, 4, 6)
    assert summary["total_rows_in"] == ROWS
    assert summary["total_rows_out"] == ROWS - 3
    assert summary["total_rows_rejected"] == 3
    scored = read_output(out)
    assert sorted(scored["id"]) == sorted(set(range(ROWS)) - set(bad))
    reference = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "ref"),
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    assert reference.rows_out == len(scored)
    pd.testing.assert_frame_equal(scored, read_output(tmp_path / "ref"))
    assert len(_rejected(out)) == 3


def test_csv_input_scores_like_parquet(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    _, client = scoring_home
    _, frame, bad = inputs
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    text = frame.head(3_000).copy()
    text["distance"] = text["distance"].astype(object)
    text.loc[10, "distance"] = "far"  # not a number: refused, with its row
    text.to_csv(csv_dir / "flights.csv", index=False)
    frame.head(3_000).to_parquet(tmp_path / "same.parquet", index=False)
    from_csv = score_batch(
        "flights@champion",
        str(csv_dir / "flights.csv"),
        str(tmp_path / "out_csv"),
        batch_rows=1_000,
        keep=["id"],
        client=client,
    )
    score_batch(
        "flights@champion",
        str(tmp_path / "same.parquet"),
        str(tmp_path / "out_pq"),
        keep=["id"],
        client=client,
    )
    assert from_csv.rows_in == 3_000 and from_csv.rows_rejected == 3  # "far", ids 3 and 1500
    refused = {e["source_row"]: e for e in _rejected(tmp_path / "out_csv")}
    assert set(refused) == {3, 10, 1_500} and refused[10]["column"] == "distance"
    assert "'far'" in refused[10]["reason"]
    a = _by_id(tmp_path / "out_csv").drop(columns="source_file")
    b = _by_id(tmp_path / "out_pq").drop(columns="source_file")
    b = b[b["id"] != 10].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert {3, 1_500} <= set(bad)


def test_input_on_s3_scores_like_local_input(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path, s3_server, monkeypatch
) -> None:
    from s3_support import BUCKET

    _, client = scoring_home
    folder, _, _ = inputs
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    s3 = s3_server.client()
    for path in sorted(folder.glob("*.parquet")):
        s3.upload_file(str(path), BUCKET, f"score-in/{path.name}")
    remote = score_batch(
        "flights@champion",
        f"s3://{BUCKET}/score-in/",
        f"s3://{BUCKET}/score-out",
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    local = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "local"),
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    assert (remote.rows_in, remote.rows_out, remote.rows_rejected) == (
        local.rows_in,
        local.rows_out,
        local.rows_rejected,
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="score-out/")["Contents"]]
    assert sum(k.startswith("score-out/part-") for k in keys) == 6
    assert sum(k.startswith("score-out/_rejected/") for k in keys) == len(
        list((tmp_path / "local" / "_rejected").glob("*.jsonl"))
    )
    frames = []
    for key in sorted(k for k in keys if k.startswith("score-out/part-")):
        s3.download_file(BUCKET, key, str(tmp_path / "dl.parquet"))
        frames.append(pd.read_parquet(tmp_path / "dl.parquet"))
    a = pd.concat(frames).sort_values("id", ignore_index=True)
    b = _by_id(tmp_path / "local")
    assert a["source_file"].str.startswith(f"s3://{BUCKET}/score-in/").all()
    pd.testing.assert_frame_equal(a.drop(columns="source_file"), b.drop(columns="source_file"))
    # a rerun finds every part done
    again = score_batch(
        "flights@champion",
        f"s3://{BUCKET}/score-in/",
        f"s3://{BUCKET}/score-out",
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    assert (again.parts_done, again.parts_skipped, again.total_rows_out) == (0, 6, local.rows_out)


def test_the_onnx_form_predicts_when_the_version_has_one(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    _, client = scoring_home
    folder, _frame, _ = inputs
    register_numeric_model(client)
    before = score_batch("numeric@champion", str(folder), str(tmp_path / "sk"), client=client)
    assert before.form == "skops"
    with pytest.raises(InvalidInput, match="no registered ONNX form"):
        score_batch("numeric@champion", str(folder), str(tmp_path / "x"), onnx=True, client=client)
    assert client.convert_model("numeric@champion").converted
    after = score_batch("numeric@champion", str(folder), str(tmp_path / "onnx"), client=client)
    assert after.form == "onnx"
    forced_off = score_batch(
        "numeric@champion", str(folder), str(tmp_path / "off"), onnx=False, client=client
    )
    assert forced_off.form == "skops"
    a, b = read_output(tmp_path / "onnx"), read_output(tmp_path / "sk")
    assert len(a) == len(b) == ROWS - 1  # only the missing dep_delay is refused here
    np.testing.assert_allclose(a["proba_1"], b["proba_1"], atol=1e-5)
    assert (a["prediction"] == b["prediction"]).mean() > 0.999
    # a rerun into the same folder with the other form is refused, not mixed
    with pytest.raises(Conflict, match="form"):
        score_batch(
            "numeric@champion", str(folder), str(tmp_path / "onnx"), onnx=False, client=client
        )


def test_errors_name_what_is_wrong(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    _, client = scoring_home
    folder, frame, _ = inputs
    out = str(tmp_path / "out")
    with pytest.raises(NotFound, match="nosuch"):
        score_batch("nosuch@champion", str(folder), out, client=client)
    with pytest.raises(NotFound, match="staging"):
        score_batch("flights@staging", str(folder), out, client=client)
    with pytest.raises(NotFound, match="no input files match"):
        score_batch("flights@champion", str(tmp_path / "nothing-*.parquet"), out, client=client)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    frame.drop(columns=["carrier", "dest"]).head(10).to_parquet(wrong / "a.parquet")
    frame.drop(columns=["origin"]).head(10).to_csv(wrong / "b.csv", index=False)
    with pytest.raises(SchemaMismatch) as info:
        score_batch("flights@champion", str(wrong), out, client=client)
    message = str(info.value)
    assert "a.parquet lacks columns ['carrier', 'dest']" in message
    assert "b.csv lacks columns ['origin']" in message
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInput, match=r"x\.parquet"):
        score_batch("flights@champion", str(broken), out, client=client)


def test_an_unreachable_object_store_is_named(
    scoring_home: tuple[Path, Client], tmp_path: Path, monkeypatch
) -> None:
    pytest.importorskip("s3fs")
    from s3_support import DUMMY_AWS_ENV, free_port

    _, client = scoring_home
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError, match="object store did not answer"):
        score_batch("flights@champion", "s3://bucket/in/", str(tmp_path / "o"), client=client)


def test_cli_prints_a_summary_and_exit_codes(
    scoring_home: tuple[Path, Client], inputs, tmp_path: Path
) -> None:
    home, _ = scoring_home
    folder, _, _ = inputs
    out = tmp_path / "out"
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelloop",
            "score",
            "flights@champion",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--workers",
            "2",
            "--part-rows",
            "4000",
        ],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ok.returncode == 0, ok.stderr
    assert f"scored {ROWS:,} rows with flights/1" in ok.stdout
    assert "3 refused" in ok.stdout and "_rejected" in ok.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelloop",
            "score",
            "nosuch@champion",
            "--data",
            str(folder),
            "--out",
            str(out),
        ],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 3 and "nosuch" in missing.stderr
