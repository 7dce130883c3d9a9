"""Batch scoring on a real Ray cluster (a head on 127.0.0.1 with two CPUs) gives what the local
executor gives, and a Ray address that does not answer is named."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scoring_support import (
    SRC,
    flights_frame,
    known_rows,
    read_output,
    register_flights_model,
    with_bad_rows,
    write_parquet_files,
)

from modelloop import Client, Settings
from modelloop.exceptions import ServiceUnavailable
from modelloop.scoring import score_batch
from s3_support import free_port

pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray start --head --block`` in its own session on a free port, stopped (its whole
    process group, workers included) when the module is done."""
    temp = tmp_path_factory.mktemp("ray")
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    ray_cli = Path(sys.executable).with_name("ray")
    log = open(temp / "head.log", "wb")  # noqa: SIM115 - closed in the finalizer
    proc = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}: see {temp / 'head.log'}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the Ray head did not start within 120 s")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader for a moment: make sure none of it is left
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    home = tmp_path_factory.mktemp("rayscore") / "mlhome"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELLOOP_HOME", str(home))
        for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT", "MODELLOOP_TRUSTED_TYPES"):
            mp.delenv(var, raising=False)
        client = Client(Settings.from_env())
        register_flights_model(client)
        frame = known_rows(flights_frame(9_000), client, "flights@champion").head(8_000)
        frame["id"] = np.arange(len(frame))
        frame, _ = with_bad_rows(frame)
        folder = tmp_path_factory.mktemp("rayinput")
        write_parquet_files(folder, frame, files=2, row_group_rows=1_000)
        yield client, folder
        client.close()


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
