"""Batch scoring on a real Ray cluster (a head on 127.0.0.1 with two CPUs) gives what the local
executor gives, and a Ray address that does not answer is named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scoring_support import (
    flights_frame,
    flights_home,
    known_rows,
    read_output,
    with_bad_rows,
    write_parquet_files,
)

from modelloop import Client
from modelloop.exceptions import ServiceUnavailable
from modelloop.scoring import score_batch
from ray_support import ray_head as start_ray_head
from s3_support import free_port

pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local Ray head for the module."""
    with start_ray_head(tmp_path_factory.mktemp("ray")) as address:
        yield address


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    with flights_home(tmp_path_factory.mktemp("rayscore") / "mlhome") as client:
        frame = known_rows(flights_frame(9_000), client, "flights@champion").head(8_000)
        frame["id"] = np.arange(len(frame))
        frame, _ = with_bad_rows(frame)
        folder = tmp_path_factory.mktemp("rayinput")
        write_parquet_files(folder, frame, files=2, row_group_rows=1_000)
        yield client, folder


def test_ray_and_local_executors_give_identical_outputs(
    ray_head: str, ray_home: tuple[Client, Path], tmp_path: Path
) -> None:
    client, folder = ray_home
    on_ray = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "ray"),
        executor="ray",
        workers=2,
        ray_address=ray_head,
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    local = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "local"),
        workers=2,
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    assert (on_ray.executor, on_ray.workers, on_ray.parts_done) == ("ray", 2, 4)
    assert (on_ray.rows_in, on_ray.rows_out, on_ray.rows_rejected) == (8_000, 7_997, 3)
    assert (local.rows_in, local.rows_out, local.rows_rejected) == (8_000, 7_997, 3)
    pd.testing.assert_frame_equal(read_output(tmp_path / "ray"), read_output(tmp_path / "local"))
    refused = {
        name: {p.name: p.read_text() for p in (tmp_path / name / "_rejected").glob("*.jsonl")}
        for name in ("ray", "local")
    }
    assert len(refused["ray"]) == 2  # ids 3 and 1500 in one part, 7777 in another
    assert refused["ray"] == refused["local"]
    # a rerun on Ray finds every part done
    again = score_batch(
        "flights@champion",
        str(folder),
        str(tmp_path / "ray"),
        executor="ray",
        workers=2,
        ray_address=ray_head,
        part_rows=2_000,
        keep=["id"],
        client=client,
    )
    assert (again.parts_done, again.parts_skipped, again.total_rows_out) == (0, 4, 7_997)


def test_a_ray_address_that_does_not_answer_is_named(
    ray_home: tuple[Client, Path], tmp_path: Path
) -> None:
    client, folder = ray_home
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable, match=f"Ray cluster at {address}"):
        score_batch(
            "flights@champion",
            str(folder),
            str(tmp_path / "o"),
            executor="ray",
            ray_address=address,
            client=client,
        )
