"""Tuning workers as Ray tasks: ``run_study(..., executor="ray")``.

Each of the ``workers`` tasks runs what a local worker process runs (:func:`_tune._work`): it
joins the study in the store's database with the same sampler seed as the local worker of the
same index, takes trials under the same study-wide lock until the budget is used, and logs each
trial as a child run. The job travels as JSON text and the training data as the Parquet bytes
of its files (written to a temporary folder on the task's node), so only the store database
has to be reachable from the cluster: PostgreSQL for a cluster of several machines; a SQLite
file only when every node sees that file (a Ray head on this machine).
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelloop.exceptions import InvalidInput, ServiceUnavailable

__all__ = ["connect", "run_ray_workers"]

#: how long a task waits for its siblings to be ready before it starts trials anyway
_READY_LIMIT_S = 120.0


def connect(address: str | None) -> bool:
    """``ray.init`` on the cluster at ``address`` (None: RAY_ADDRESS, else a new local Ray);
    True when this call connected (the caller shuts down). An address that does not answer is
    named in a :class:`ServiceUnavailable` at once."""
    try:
        import ray
    except ImportError:
        raise InvalidInput("--executor ray needs ray: pip install 'modelloop[ray]'") from None
    from modelloop.scoring._job import _probe_ray

    if ray.is_initialized():
        return False
    _probe_ray(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "(RAY_ADDRESS, or a new local one)"
        raise ServiceUnavailable(
            f"the Ray cluster {where} did not answer: {exc}; check --ray-address and that "
            "the head node runs (ray status)"
        ) from None
    return True


class _Barrier:
    """Counts the tasks that are ready (data loaded, study joined) or failed before that."""

    def __init__(self) -> None:
        self.arrived: set[int] = set()

    def arrive(self, worker: int) -> None:
        self.arrived.add(worker)

    def count(self) -> int:
        return len(self.arrived)


def _check_reachable(storage_url: str) -> None:
    """A SQLite store must be the same file on this node (SQLAlchemy would create an empty one)."""
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    if url.get_backend_name() == "sqlite" and not Path(str(url.database)).is_file():
        raise InvalidInput(
            f"the store database file {url.database} is not on Ray node {socket.gethostname()}: "
            "tuning on a Ray cluster of several machines needs a PostgreSQL store (a SQLite "
            "file works only when every node sees it, e.g. a Ray head on this machine)"
        )


def _task(job_text: str, worker: int, files: Mapping[str, bytes], barrier: Any) -> int:
    """One tuning worker on a Ray node; the number of trials it ran."""
    import ray

    from modelloop.pipeline._tune import _work

    job = json.loads(job_text)
    workers = int(job["workers"])

    def ready() -> None:
        ray.get(barrier.arrive.remote(worker))
        stop = time.monotonic() + _READY_LIMIT_S
        while time.monotonic() < stop and ray.get(barrier.count.remote()) < workers:
            time.sleep(0.05)

    try:
        _check_reachable(job["storage_url"])
        with tempfile.TemporaryDirectory(prefix="modelloop-tune-ray-") as tmp:
            for key, data in files.items():
                path = Path(tmp) / f"{key}.parquet"
                path.write_bytes(data)
                job[key] = str(path)
            return _work(job, worker, ready=ready)
    except BaseException:
        ray.get(barrier.arrive.remote(worker))  # siblings need not wait for this one
        raise


def run_ray_workers(
    job: Mapping[str, Any], workers: int, address: str | None
) -> list[tuple[int, dict[str, str]]]:
    """Run ``workers`` Ray tasks on the job and wait for all; the (worker, error) of each
    failed one, as the local executor reports them."""
    started_here = connect(address)
    import ray

    try:
        files: Mapping[str, bytes] = {
            key: Path(job[key]).read_bytes() for key in ("train_path", "valid_path") if job[key]
        }
        files_ref = ray.put(files)
        barrier = ray.remote(num_cpus=0)(_Barrier).remote()  # type: ignore[attr-defined]
        task = ray.remote(num_cpus=1, max_retries=0)(_task)
        text = json.dumps({**job, "workers": workers, "ready_dir": None})
        futures = [task.remote(text, i, files_ref, barrier) for i in range(workers)]
        errors: list[tuple[int, dict[str, str]]] = []
        try:
            for i, fut in enumerate(futures):
                try:
                    ray.get(fut)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, BaseException):
                        errors.append((i, {"type": type(cause).__name__, "message": str(cause)}))
                    else:
                        errors.append((i, {"type": "ModelloopError", "message": str(exc)}))
                except ray.exceptions.RayError as exc:
                    errors.append(
                        (i, {"type": "ServiceUnavailable", "message": f"Ray task lost: {exc}"})
                    )
        except BaseException:
            for fut in futures:
                ray.cancel(fut, force=True)
            raise
        finally:
            ray.kill(barrier)  # type: ignore[arg-type]
        return errors
    finally:
        if started_here:
            ray.shutdown()
