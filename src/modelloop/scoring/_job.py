"""A batch scoring job: resolve the version, cut the input into parts, score the parts not done
yet with the chosen executor, and total the outcome."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from modelloop.exceptions import (
    Conflict,
    InvalidInput,
    ModelloopError,
    NotFound,
    ServiceUnavailable,
    StoreError,
)
from modelloop.scoring._inputs import Part, find_inputs, open_fs, plan_parts
from modelloop.scoring._runner import (
    ModelSource,
    PartResult,
    Runner,
    part_name,
    read_part_counts,
    score_part,
)

if TYPE_CHECKING:
    from modelloop._client import Client

__all__ = ["MANIFEST", "ScoreSummary", "score_batch"]

MANIFEST = "_scoring.json"
SUMMARY = "_summary.json"
Executor = Literal["local", "ray"]


@dataclass
class ScoreSummary:
    """The outcome of :func:`score_batch`. ``rows_*`` count this run's work; ``total_*`` the
    whole output, parts finished by an earlier run included."""

    model: str
    version: int
    form: str  # "onnx" (onnxruntime, the version's registered ONNX form) or "skops"
    executor: str
    workers: int
    out: str
    files: int
    parts: int
    parts_done: int
    parts_skipped: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    total_rows_in: int
    total_rows_out: int
    total_rows_rejected: int
    rejected_by_column: dict[str, int]
    rejected_path: str | None
    seconds: float
    rows_per_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model_source(client: Client, model: str, onnx: bool | None) -> tuple[ModelSource, list[str]]:
    from modelloop.models._package import read_signature
    from modelloop.registry._onnx import ONNX_TAG, load_registered_onnx
    from modelloop.registry._uri import parse_model_spec

    notes: list[str] = []
    ref = parse_model_spec(model)
    mv = client.resolve(ref)
    folder = client.fetch_model(mv)
    signature = read_signature(folder)
    if signature is None:
        raise InvalidInput(
            f"{mv.name}/{mv.version} has no signature, so its input cannot be validated; log it "
            "with an input example"
        )
    trusted = tuple(client.settings.trusted_types)
    base = ModelSource(mv.name, mv.version, "skops", signature.to_json(), trusted_types=trusted)
    if onnx is not False and mv.tags.get(ONNX_TAG):
        try:
            predictor = load_registered_onnx(client, mv, signature)
        except ImportError:
            notes.append(
                "the version has an ONNX form but onnxruntime is not installed "
                "(pip install 'modelloop[onnx]'): scikit-learn predicts"
            )
            predictor = None
        if predictor is not None:
            meta = json.loads(client.artifacts.read_bytes(mv.tags[ONNX_TAG]))
            base.form = "onnx"
            base.onnx_blob = predictor.onnx_model
            base.onnx_meta = meta
            return base, notes
    elif onnx:
        raise InvalidInput(
            f"{mv.name}/{mv.version} has no registered ONNX form; make one with "
            f"modelloop models convert {mv.name}/{mv.version}"
        )
    base.package_dir = str(folder)
    return base, notes


def _read_manifest(out_fs: Any, path: str) -> dict[str, Any] | None:
    try:
        with out_fs.open(path, "rb") as fh:
            return dict(json.loads(fh.read()))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidInput(f"{path} is not a scoring manifest ({exc}); use another --out") from None


def _write_json(out_fs: Any, path: str, doc: dict[str, Any]) -> None:
    from modelloop.scoring._runner import _Target

    target = _Target(out_fs, path)
    try:
        with target.open() as fh:
            fh.write(json.dumps(doc, indent=2).encode())
        target.commit()
    except BaseException:
        target.abort()
        raise


def _out_unreachable(out: str, exc: Exception) -> StoreError:
    return StoreError(
        f"cannot write the output {out}: the object store did not answer "
        f"({type(exc).__name__}: {exc}); for S3 check the endpoint (AWS_ENDPOINT_URL), the "
        "credentials and the bucket"
    )


def score_batch(
    model: str,
    data: str,
    out: str,
    *,
    executor: Executor = "local",
    workers: int = 1,
    ray_address: str | None = None,
    batch_rows: int = 262_144,
    part_rows: int = 1_000_000,
    keep: Sequence[str] = (),
    onnx: bool | None = None,
    client: Client | None = None,
    storage_options: dict[str, Any] | None = None,
    on_start: Callable[[int | None, int], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score the Parquet/CSV files ``data`` names (a file, folder or glob; local or ``s3://``)
    with the registered version ``model`` names (``NAME@alias``, ``NAME/3``, ``NAME``), into
    Parquet parts under ``out``.

    Input is read ``batch_rows`` at a time and never whole. Each batch is validated against the
    version's signature; refused rows go to ``out/_rejected/part-*.jsonl`` with their source
    file, row number (0-based, among the file's data rows) and reason. The version's registered
    ONNX form predicts when it has one (``onnx=False``: never; ``onnx=True``: required), else
    the scikit-learn package. Each output row carries ``source_file``, ``source_row`` (together
    its row id), ``model_version``, the ``keep`` input columns, ``prediction`` and, for a
    classifier, ``proba_<class>``.

    Work is cut into parts (a CSV file, or about ``part_rows`` rows of a Parquet file's row
    groups), each written whole or not at all: a rerun with the same ``out`` skips finished
    parts. ``executor="local"`` scores with ``workers`` processes; ``"ray"`` with ``workers``
    Ray actors on the cluster at ``ray_address`` (``ray.init(address=...)``).

    ``on_start(total_rows or None, parts_to_do)`` and ``on_rows(n)`` report progress.
    """
    from modelloop._client import default_client

    if executor not in ("local", "ray"):
        raise InvalidInput(f"executor must be 'local' or 'ray', got {executor!r}")
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    if batch_rows < 1 or part_rows < 1:
        raise InvalidInput("batch_rows and part_rows must be at least 1")
    started = time.perf_counter()
    client = client or default_client()
    source, notes = _model_source(client, model, onnx)
    runner_sig = Runner.signature_of(source)
    keep = list(dict.fromkeys(keep))
    clash = [
        c
        for c in keep
        if c in ("source_file", "source_row", "model_version", "prediction")
        or c.startswith("proba_")
    ]
    if clash:
        raise InvalidInput(f"--keep columns {clash} have the names of output columns")
    files = find_inputs(data, storage_options)
    in_fs, _ = open_fs(data, storage_options)
    out_fs, out_path = open_fs(out, storage_options)
    out_path = out_path.rstrip("/")
    if type(in_fs) is type(out_fs):  # the output of an earlier run is not input
        files = [f for f in files if not f.fs_path.startswith(f"{out_path}/")]
        if not files:
            raise NotFound(f"no input files match {data} outside the output folder {out}")
    parts = plan_parts(in_fs, files, list(dict.fromkeys([*runner_sig.columns, *keep])), part_rows)

    manifest = {
        "format": 1,
        "model": source.name,
        "version": source.version,
        "form": source.form,
        "part_rows": part_rows,
        "keep": keep,
    }
    try:
        out_fs.makedirs(out_path, exist_ok=True)
        existing = _read_manifest(out_fs, f"{out_path}/{MANIFEST}")
        if existing is None:
            _write_json(out_fs, f"{out_path}/{MANIFEST}", {**manifest, "data": data})
        else:
            differ = sorted(k for k in manifest if existing.get(k) != manifest[k])
            if differ:
                shown = ", ".join(
                    f"{k}: {existing.get(k)!r} there, {manifest[k]!r} now" for k in differ
                )
                raise Conflict(
                    f"{out} holds the output of another scoring job ({shown}); use a new --out, "
                    "or remove that folder to start over"
                )
        done = {p.rsplit("/", 1)[-1] for p in out_fs.glob(f"{out_path}/part-*.parquet")}
    except ModelloopError:
        raise
    except FileNotFoundError as exc:
        raise NotFound(f"cannot write the output {out}: {exc} (does the bucket exist?)") from exc
    except PermissionError as exc:
        raise InvalidInput(f"cannot write the output {out}: permission denied ({exc})") from exc
    except Exception as exc:
        raise _out_unreachable(out, exc) from exc

    todo = [p for p in parts if part_name(p.key) not in done]
    skipped = [p for p in parts if part_name(p.key) in done]
    known = [p.rows for p in todo]
    if on_start is not None:
        on_start(None if any(r is None for r in known) else sum(r or 0 for r in known), len(todo))

    results: list[PartResult] = []
    if todo:
        if executor == "ray":
            results = _run_ray(
                source,
                todo,
                data,
                out,
                storage_options,
                batch_rows,
                keep,
                workers,
                ray_address,
                on_rows,
            )
        elif workers == 1:
            results = _run_inline(source, todo, in_fs, out_fs, out_path, batch_rows, keep, on_rows)
        else:
            results = _run_processes(
                source, todo, data, out, storage_options, batch_rows, keep, workers, on_rows
            )

    total_in = sum(r.rows_in for r in results)
    total_out = sum(r.rows_out for r in results)
    total_rej = sum(r.rows_rejected for r in results)
    for p in skipped:
        a, b, c = read_part_counts(out_fs, f"{out_path}/{part_name(p.key)}")
        total_in, total_out, total_rej = total_in + a, total_out + b, total_rej + c
    by_column: dict[str, int] = {}
    for r in results:
        for col, n in r.rejected_columns.items():
            by_column[col] = by_column.get(col, 0) + n
    seconds = time.perf_counter() - started
    rows_in = sum(r.rows_in for r in results)
    shown_out = out.rstrip("/")
    summary = ScoreSummary(
        model=source.name,
        version=source.version,
        form=source.form,
        executor=executor,
        workers=workers,
        out=shown_out,
        files=len(files),
        parts=len(parts),
        parts_done=len(results),
        parts_skipped=len(skipped),
        rows_in=rows_in,
        rows_out=sum(r.rows_out for r in results),
        rows_rejected=sum(r.rows_rejected for r in results),
        total_rows_in=total_in,
        total_rows_out=total_out,
        total_rows_rejected=total_rej,
        rejected_by_column=by_column,
        rejected_path=f"{shown_out}/_rejected" if total_rej else None,
        seconds=round(seconds, 3),
        rows_per_s=round(rows_in / seconds, 1) if seconds > 0 else 0.0,
        notes=notes,
    )
    try:
        _write_json(out_fs, f"{out_path}/{SUMMARY}", summary.to_dict())
    except Exception as exc:
        raise _out_unreachable(out, exc) from exc
    return summary


# -- executors ---------------------------------------------------------------------------------


def _run_inline(
    source: ModelSource,
    todo: list[Part],
    in_fs: Any,
    out_fs: Any,
    out_path: str,
    batch_rows: int,
    keep: list[str],
    on_rows: Callable[[int], None] | None,
) -> list[PartResult]:
    runner = Runner(source)
    return [
        score_part(
            runner,
            p,
            in_fs=in_fs,
            out_fs=out_fs,
            out_path=out_path,
            batch_rows=batch_rows,
            keep=keep,
            on_rows=on_rows,
        )
        for p in todo
    ]


class _Worker:
    """One worker's model and file systems, loaded once and used for every part it gets."""

    def __init__(
        self,
        source: ModelSource,
        data: str,
        out: str,
        storage_options: dict[str, Any] | None,
        threads: int | None,
    ) -> None:
        if threads:
            try:
                from threadpoolctl import threadpool_limits

                threadpool_limits(threads)
            except ImportError:
                pass
        self.runner = Runner(source)
        self.in_fs, _ = open_fs(data, storage_options)
        self.out_fs, path = open_fs(out, storage_options)
        self.out_path = path.rstrip("/")

    def score(self, part: Part, batch_rows: int, keep: list[str]) -> PartResult:
        return score_part(
            self.runner,
            part,
            in_fs=self.in_fs,
            out_fs=self.out_fs,
            out_path=self.out_path,
            batch_rows=batch_rows,
            keep=keep,
        )


_WORKER: _Worker | None = None


def _init_process(*args: Any) -> None:
    global _WORKER
    _WORKER = _Worker(*args)


def _process_part(part: Part, batch_rows: int, keep: list[str]) -> PartResult:
    assert _WORKER is not None
    return _WORKER.score(part, batch_rows, keep)


def _threads_each(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _run_processes(
    source: ModelSource,
    todo: list[Part],
    data: str,
    out: str,
    storage_options: dict[str, Any] | None,
    batch_rows: int,
    keep: list[str],
    workers: int,
    on_rows: Callable[[int], None] | None,
) -> list[PartResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    results: list[PartResult] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=ctx,
        initializer=_init_process,
        initargs=(source, data, out, storage_options, _threads_each(workers)),
    ) as pool:
        futures = [pool.submit(_process_part, p, batch_rows, keep) for p in todo]
        try:
            for fut in as_completed(futures):
                r = fut.result()
                results.append(r)
                if on_rows is not None:
                    on_rows(r.rows_in)
        except BrokenProcessPool as exc:
            for f in futures:
                f.cancel()
            raise ServiceUnavailable(
                f"a scoring worker process died ({exc}); {len(results)} of {len(todo)} parts "
                "were finished and are kept: run the same command again to score the rest"
            ) from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _probe_ray(address: str | None) -> None:
    """``ServiceUnavailable`` at once when a ``host:port`` Ray address refuses connections
    (``ray.init`` would wait minutes for it)."""
    import socket

    if not address or "://" in address or address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInput(
            f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        )
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=10):
            pass
    except OSError as exc:
        raise ServiceUnavailable(
            f"the Ray cluster at {address} did not answer ({exc}); check --ray-address and that "
            "the head node runs (ray status)"
        ) from None


def _run_ray(
    source: ModelSource,
    todo: list[Part],
    data: str,
    out: str,
    storage_options: dict[str, Any] | None,
    batch_rows: int,
    keep: list[str],
    workers: int,
    address: str | None,
    on_rows: Callable[[int], None] | None,
) -> list[PartResult]:
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise InvalidInput("--executor ray needs ray: pip install 'modelloop[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        _probe_ray(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "(RAY_ADDRESS, or a new local one)"
            raise ServiceUnavailable(
                f"the Ray cluster {where} did not answer: {exc}; check --ray-address and that "
                "the head node runs (ray status)"
            ) from None
    try:
        actor_cls = ray.remote(num_cpus=1)(_Worker)
        shipped = source.portable()
        actors = [
            actor_cls.remote(shipped, data, out, storage_options, 1)  # type: ignore[attr-defined]
            for _ in range(min(workers, len(todo)))
        ]
        pool = ActorPool(actors)
        results: list[PartResult] = []
        try:
            for r in pool.map_unordered(lambda a, p: a.score.remote(p, batch_rows, keep), todo):
                results.append(r)
                if on_rows is not None:
                    on_rows(r.rows_in)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ModelloopError):
                raise cause from None
            raise ServiceUnavailable(
                f"a Ray scoring task failed: {exc}; {len(results)} parts were finished and are "
                "kept: run the same command again to score the rest"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise ServiceUnavailable(
                f"a Ray scoring worker died: {exc}; {len(results)} parts were finished and are "
                "kept: run the same command again to score the rest"
            ) from None
        finally:
            for a in actors:
                ray.kill(a)  # type: ignore[arg-type]
        return results
    finally:
        if started_here:
            ray.shutdown()
