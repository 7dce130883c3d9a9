"""The per-part work of a scoring job, the same under every executor: read a part in row
batches, validate each batch, predict, and write the part's output whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import InvalidInput, ModelloopError, StoreError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from modelloop.models import Signature
    from modelloop.scoring._inputs import Part

__all__ = ["FAULT_ENV", "ModelSource", "PartResult", "Runner", "score_part"]

#: Test hook: after this many parts of a process are written, the next one is left half done
#: (its temporary file written, not renamed) and the process exits at once, as a crash would.
FAULT_ENV = "MODELLOOP_FAULT_SCORE_CRASH_AFTER_PARTS"
#: Key-value metadata of an output part: its counts, so a rerun can total skipped parts.
META_KEY = b"modelloop.scoring"


@dataclass
class ModelSource:
    """What a worker needs to load the model, without the registry: the package's files (or
    its local folder) and, when the version has one, its ONNX form."""

    name: str
    version: int
    form: str  # "onnx" or "skops"
    signature_json: str
    package_dir: str | None = None
    package_files: dict[str, bytes] | None = None
    onnx_blob: bytes | None = None
    onnx_meta: dict[str, Any] | None = None
    trusted_types: tuple[str, ...] = ()

    def portable(self) -> ModelSource:
        """The same source with the package's files in memory (for workers on other hosts)."""
        if self.form == "onnx" or self.package_files is not None or self.package_dir is None:
            return self
        root = Path(self.package_dir)
        files = {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }
        return ModelSource(
            self.name,
            self.version,
            self.form,
            self.signature_json,
            None,
            files,
            None,
            None,
            self.trusted_types,
        )


@dataclass
class PartResult:
    """What one part gave."""

    key: str
    source: str
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    skipped: bool = False
    seconds: float = 0.0
    rejected_columns: dict[str, int] = field(default_factory=dict)


class Runner:
    """A loaded model predicting validated frames, with the ONNX form when it has one."""

    def __init__(self, source: ModelSource) -> None:
        from modelloop.models import Signature

        self.source = source
        self.signature: Signature = Signature.from_json(source.signature_json)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.onnx: Any = None
        self.model: Any = None
        if source.form == "onnx":
            from modelloop.models._onnx import predictor_from

            assert source.onnx_blob is not None and source.onnx_meta is not None
            self.onnx = predictor_from(source.onnx_blob, source.onnx_meta, self.signature)
            self.has_proba = self.onnx.has_proba and self.signature.task != "regression"
            self.from_proba = False
            return
        from modelloop.models import load_model
        from modelloop.models._onnx import final_step, labels_from_proba

        folder = source.package_dir
        if folder is None or not Path(folder).is_dir():
            if source.package_files is None:
                raise InvalidInput(f"the package of {source.name}/{source.version} is not here")
            self._tmp = tempfile.TemporaryDirectory(prefix="modelloop-score-")
            folder = self._tmp.name
            for rel, blob in source.package_files.items():
                target = Path(folder) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
        package = load_model(folder, trusted_types=source.trusted_types)
        self.model = package.model
        self.has_proba = self.signature.task != "regression" and hasattr(
            self.model, "predict_proba"
        )
        self.from_proba = self.has_proba and labels_from_proba(self.model)
        self.model_classes = (
            np.asarray(final_step(self.model).classes_) if self.from_proba else None
        )

    @staticmethod
    def signature_of(source: ModelSource) -> Signature:
        from modelloop.models import Signature

        return Signature.from_json(source.signature_json)

    @property
    def classes(self) -> list[Any] | None:
        return list(self.signature.classes) if self.signature.classes is not None else None

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (or values) and class probabilities (None for a regressor)."""
        if self.onnx is not None:
            if not len(frame):
                return np.empty(0), None
            return self.onnx.predict_both(frame)
        model = self.model
        if not len(frame):
            return np.empty(0), None
        if not self.has_proba:
            return np.asarray(model.predict(frame)), None
        proba = np.asarray(model.predict_proba(frame))
        if self.from_proba:
            assert self.model_classes is not None
            return self.model_classes[np.argmax(proba, axis=1)], proba
        return np.asarray(model.predict(frame)), proba


# -- reading -----------------------------------------------------------------------------------


def _batches(
    fs: Any, part: Part, columns: list[str], batch_rows: int, text: list[str]
) -> Iterator[pa.Table]:
    """The part's rows, ``batch_rows`` at a time, only the ``columns`` read (the ``text``
    columns of a CSV file as text, for the signature's check to read)."""
    import pyarrow as pa

    if part.file.kind == "parquet":
        import pyarrow.parquet as pq

        with fs.open(part.file.fs_path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            if not part.row_groups:
                return
            for batch in pf.iter_batches(
                batch_size=batch_rows, row_groups=list(part.row_groups), columns=columns
            ):
                yield pa.Table.from_batches([batch])
        return
    import pyarrow.csv as pcsv

    with fs.open(part.file.fs_path, "rb") as fh:
        reader = pcsv.open_csv(
            fh,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=pcsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in text},
                strings_can_be_null=True,
            ),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            while rows >= batch_rows:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending = rest.to_batches()
                rows = rest.num_rows
        if rows:
            yield pa.Table.from_batches(pending)


# -- writing -----------------------------------------------------------------------------------


def output_schema(runner: Runner, keep: list[str], keep_types: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("model_version", pa.int64()),
    ]
    fields += [pa.field(c, keep_types[c]) for c in keep]
    fields.append(pa.field("prediction", _label_type(runner)))
    if runner.has_proba and runner.classes is not None:
        fields += [pa.field(f"proba_{c}", pa.float64()) for c in runner.classes]
    return pa.schema(fields)


def _label_type(runner: Runner) -> Any:
    import pyarrow as pa

    classes = runner.classes
    if runner.signature.task == "regression" or classes is None:
        return pa.float64()
    if all(isinstance(c, bool) for c in classes):
        return pa.bool_()
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return pa.int64()
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return pa.float64()
    return pa.string()


def part_name(key: str) -> str:
    return f"part-{key}.parquet"


def rejected_name(key: str) -> str:
    return f"part-{key}.jsonl"


class _Target:
    """A file that appears at its final name whole, or not at all: a local file is written under
    a temporary name beside it and renamed; an object is written to a local temporary file and
    uploaded when whole (an object store shows an object only once its upload completes, and
    nothing is uploaded for a part that failed half way)."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path
        self.local = _is_local(fs)
        if self.local:
            folder, name = path.rsplit("/", 1)
            self.tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        else:
            fd, self.tmp = tempfile.mkstemp(prefix="modelloop-score-", suffix=".tmp")
            os.close(fd)

    def open(self) -> Any:
        if self.local:
            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        return open(self.tmp, "wb")

    def commit(self) -> None:
        if self.local:
            os.replace(self.tmp, self.path)
            return
        try:
            self.fs.put_file(self.tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)

    def abort(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


_parts_done = 0
_END = object()


def _ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, made by a thread that keeps up to ``depth`` of them ready: the next batch is
    read and validated while this one is predicted (which releases the GIL)."""
    import queue
    import threading

    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:
            put((_END, exc))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="modelloop-score-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = ready.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


class _Behind:
    """A thread that hands the items it is given, in order, to ``write``, keeping up to
    ``depth`` of them waiting: a batch's output is encoded and written while the next one is
    predicted (pyarrow's Parquet writer releases the GIL). The first error of ``write`` stops
    it; :meth:`put` and :meth:`finish` raise that error in the caller's thread."""

    def __init__(self, write: Callable[[Any], None], depth: int = 2) -> None:
        import queue
        import threading

        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelloop-score-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self._write(item)
            except BaseException as exc:
                self._error = exc
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        import queue

        while True:
            self._raise()
            if not self._thread.is_alive():
                raise RuntimeError("the scoring writer thread stopped")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every item is written; raise the error of the first that was not."""
        self.put(_END)
        self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """Stop without writing what is still waiting (after an error in the caller)."""
        self._stop.set()
        self._thread.join(timeout=30)


class _PartOutput:
    """The output of one part into an open ``sink``, batch by batch: the Parquet part with one
    row per scored row, and the refused rows' JSON lines kept for the side file."""

    def __init__(self, runner: Runner, part: Part, keep: list[str], sink: Any) -> None:
        self.runner, self.part, self.keep, self.sink = runner, part, keep, sink
        self.writer: Any = None
        self.schema: Any = None
        self.rejected: list[bytes] = []
        self.rejected_columns: dict[str, int] = {}

    def write(self, item: tuple[Any, ...]) -> None:
        """One batch: its first row number, the read table (for ``keep`` columns and refused
        rows' values; None when neither is needed), its keep-types, the mask of its scored rows
        (None: all), its refused rows and the predictions of the scored ones."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        row, n, table, keep_types, mask, bad, labels, proba = item
        runner, part = self.runner, self.part
        if self.schema is None:
            self.schema = output_schema(runner, self.keep, keep_types)
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="snappy")
        schema = self.schema
        rows = np.arange(row, row + n, dtype=np.int64)
        if mask is not None:
            rows = rows[mask]
        m = len(rows)
        arrays: list[Any] = [
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(m, dtype=np.int32)), pa.array([part.file.path])
            ).cast(pa.string())
            if m
            else pa.array([], pa.string()),
            pa.array(rows),
            pa.array(np.full(m, runner.source.version, dtype=np.int64)),
        ]
        for c in self.keep:
            col = table.column(c)
            arrays.append(col if mask is None else col.filter(pa.array(mask)))
        arrays.append(pa.array(_plain(labels), type=schema.field("prediction").type))
        if runner.has_proba and runner.classes is not None:
            k = len(runner.classes)
            p = proba if proba is not None else np.empty((0, k))
            arrays += [pa.array(p[:, j]) for j in range(k)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        if bad:
            positions = sorted(bad)
            values = table.select(runner.signature.columns).take(pa.array(positions)).to_pylist()
            for pos, vals in zip(positions, values, strict=True):
                column, reason = bad[pos]
                self.rejected_columns[column] = self.rejected_columns.get(column, 0) + 1
                self.rejected.append(
                    json.dumps(
                        {
                            "source_file": part.file.path,
                            "source_row": row + pos,
                            "column": column,
                            "reason": reason,
                            "values": vals,
                        },
                        default=str,
                    ).encode()
                )

    def close(self, result: PartResult) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:  # an empty part: still a finished one
            self.schema = output_schema(self.runner, self.keep, {c: pa.string() for c in self.keep})
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="snappy")
        counts = {"rows_in": result.rows_in, "rows_rejected": result.rows_rejected}
        self.writer.add_key_value_metadata({META_KEY: json.dumps(counts)})
        writer, self.writer = self.writer, None
        writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None


def score_part(
    runner: Runner,
    part: Part,
    *,
    in_fs: Any,
    out_fs: Any,
    out_path: str,
    batch_rows: int,
    keep: list[str] | None = None,
    on_rows: Any = None,
) -> PartResult:
    """Score one part into ``<out>/part-KEY.parquet`` (and its refused rows into
    ``<out>/_rejected/part-KEY.jsonl``), both written whole or not at all; the output part is
    written last, so its presence means the part is done.

    Three threads share the work: one reads and validates the next batches, this one
    predicts, one encodes and writes the output of the batches predicted; the output keeps the
    input's order."""
    import pyarrow as pa

    from modelloop.scoring._validate import csv_columns, split_valid

    global _parts_done
    started = time.perf_counter()
    keep = list(keep or [])
    sig_cols = runner.signature.columns
    columns = list(dict.fromkeys([*sig_cols, *keep]))
    result = PartResult(key=part.key, source=part.file.path)
    target = _Target(out_fs, f"{out_path}/{part_name(part.key)}")
    output: _PartOutput | None = None
    behind: _Behind | None = None
    row = part.first_row
    try:
        with target.open() as sink:

            def prepare(table: pa.Table) -> tuple[pa.Table, Any, Any, dict[int, Any]]:
                if part.file.kind == "csv":
                    frame, pre_bad = csv_columns(table, runner.signature)
                else:
                    frame, pre_bad = table.to_pandas(), {}
                return (table, *split_valid(frame, runner.signature, pre_bad, table))

            output = _PartOutput(runner, part, keep, sink)
            behind = _Behind(output.write)
            keep_types: dict[str, Any] | None = None
            batches = _batches(in_fs, part, columns, batch_rows, sig_cols)
            for table, validated, mask, bad in _ahead(map(prepare, batches)):
                n = table.num_rows
                labels, proba = runner.predict(validated)
                del validated
                if keep_types is None:
                    keep_types = {c: table.schema.field(c).type for c in keep}
                needed = table if (keep or bad) else None
                behind.put((row, n, needed, keep_types, mask, bad, labels, proba))
                result.rows_in += n
                result.rows_out += n if mask is None else int(np.count_nonzero(mask))
                result.rows_rejected += len(bad)
                row += n
                if on_rows is not None:
                    on_rows(n)
            behind.finish()
            behind = None
            output.close(result)
        result.rejected_columns = output.rejected_columns
        if output.rejected:
            side = _Target(out_fs, f"{out_path}/_rejected/{rejected_name(part.key)}")
            try:
                with side.open() as fh:
                    fh.write(b"\n".join(output.rejected) + b"\n")
                side.commit()
            except BaseException:
                side.abort()
                raise
        limit = os.environ.get(FAULT_ENV)
        if limit is not None and _parts_done >= int(limit):
            os._exit(75)  # a crash: the output part stays under its temporary name
        target.commit()
        _parts_done += 1
    except BaseException as exc:
        if behind is not None:
            behind.abandon()
        if output is not None:
            output.abort()
        target.abort()
        if isinstance(exc, ModelloopError | KeyboardInterrupt):
            raise
        if isinstance(exc, OSError | pa.ArrowException):
            raise StoreError(f"scoring {part.file.path} (part {part.key}) failed: {exc}") from exc
        raise
    result.seconds = time.perf_counter() - started
    return result


def _plain(values: np.ndarray) -> Any:
    if values.dtype == object:
        return values.tolist()
    return values


def read_part_counts(out_fs: Any, path: str) -> tuple[int, int, int]:
    """(rows in, rows out, rows refused) of a finished output part, from its footer."""
    import pyarrow.parquet as pq

    with out_fs.open(path, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    kv = meta.metadata or {}
    counts = json.loads(kv.get(META_KEY, b"{}") or b"{}")
    rows_out = meta.num_rows
    return int(counts.get("rows_in", rows_out)), rows_out, int(counts.get("rows_rejected", 0))
