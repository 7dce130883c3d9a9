"""Where the prediction log, feedback and ops history live: ``MODELLOOP_LOG_ROOT``.

Unset, the logs stay under ``$MODELLOOP_HOME`` in the layout monitoring has always read
(``predictions/<model>/<segment>.parquet``). A local folder keeps that layout under the folder
(e.g. a volume the replicas share). A URL (``s3://bucket/prefix``; s3fs is the ``s3`` extra)
is a *shared root*, written through fsspec in a layout partitioned by hour::

    <root>/<kind>/model=<model>/date=YYYY-MM-DD/hour=HH/<created_ns>-<host>-<pid>-<token>-<seq>.parquet

A segment's name is fixed when it is made and unique per replica (host, process id, a start
token and a sequence number), so replicas never overwrite each other, and uploading the same
segment twice overwrites it with itself. Each segment is one PUT, so an object is whole or
absent. Every segment holds the rows of one hour, so a window lists and opens only its hours.

While the root cannot be written, :class:`SegmentSink` spools segments to a bounded local folder
(``$MODELLOOP_HOME/spool``, ``MODELLOOP_LOG_SPOOL_MAX_BYTES``) and a thread uploads them, oldest
first, when the root answers again; past the bound, new rows are dropped and counted.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelloop._fs import atomic_file, is_url
from modelloop._names import check_model_name
from modelloop.exceptions import InvalidInput, StoreError

__all__ = [
    "LOG_ROOT_ENV",
    "SPOOL_MAX_BYTES_ENV",
    "SegmentSink",
    "SharedRoot",
    "log_root",
    "replica_name",
    "shared_root",
]

LOG_ROOT_ENV = "MODELLOOP_LOG_ROOT"
SPOOL_MAX_BYTES_ENV = "MODELLOOP_LOG_SPOOL_MAX_BYTES"
DEFAULT_SPOOL_MAX_BYTES = 1 << 30

logger = logging.getLogger(__name__)

_HOUR_NS = 3_600 * 1_000_000_000


def replica_name() -> str:
    """A name for one writer among the replicas that share a log root: ``host-pid-token`` (the
    host made safe for a file name; the token tells apart writers of one process)."""
    host = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_PART = re.compile(r"^(?:.*/)?date=(\d{4}-\d{2}-\d{2})(?:/hour=(\d{2}))?$")


def log_root(home: str | os.PathLike[str]) -> str | Path:
    """The log root: ``MODELLOOP_LOG_ROOT`` when set (a URL as given, a folder as a Path),
    else ``home``."""
    value = os.environ.get(LOG_ROOT_ENV, "").strip()
    if not value:
        return Path(home)
    return value.rstrip("/") if is_url(value) else Path(value).expanduser()


def shared_root(home: str | os.PathLike[str]) -> SharedRoot | None:
    """The shared (URL) log root, or None when the logs are local files."""
    root = log_root(home)
    return SharedRoot(root) if isinstance(root, str) else None


def spool_max_bytes() -> int:
    value = os.environ.get(SPOOL_MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_SPOOL_MAX_BYTES
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidInput(f"{SPOOL_MAX_BYTES_ENV}={value!r}: expected a number of bytes >= 0")
    return n


def _hour_start(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // _HOUR_NS * 3_600, tz=UTC)


class SharedRoot:
    """A log root on an fsspec file system (``s3://bucket/prefix``)."""

    def __init__(self, url: str, *, writer: bool = False, filesystem: Any = None) -> None:
        self.url = url.rstrip("/")
        self.protocol = self.url.split("://", 1)[0]
        if filesystem is not None:
            self.fs = filesystem
            self.base = self.url.split("://", 1)[1]
            return
        try:
            from fsspec.core import url_to_fs

            options: dict[str, Any] = {}
            if self.protocol in ("s3", "s3a"):
                # the server must not wait minutes on a store that is down: fail fast, spool,
                # retry later; readers get a few more attempts
                options = {
                    # readers share one client per root; a listing is never cached, so a
                    # monitor that runs every 10 minutes sees the segments written since
                    "skip_instance_cache": writer,
                    "use_listings_cache": False,
                    "config_kwargs": {
                        "connect_timeout": 3,
                        "read_timeout": 20,
                        "retries": {"max_attempts": 1 if writer else 3},
                    },
                }
                endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                    "AWS_ENDPOINT_URL"
                )
                if endpoint:  # explicit, so that a cached client follows the environment
                    options["client_kwargs"] = {"endpoint_url": endpoint}
            self.fs, self.base = url_to_fs(self.url, **options)
            if self.protocol in ("s3", "s3a"):
                self.fs.retries = 1 if writer else 3  # s3fs's own loop, on top of botocore's
        except ImportError as exc:
            raise InvalidInput(
                f"{LOG_ROOT_ENV}={self.url} needs a file system for {self.protocol}:// "
                f"(for s3://: pip install 'modelloop[s3]'): {exc}"
            ) from exc
        self.base = str(self.base).rstrip("/")

    def describe(self) -> str:
        """The root and, for S3, the endpoint it is reached at (for error messages)."""
        endpoint = None
        client_kwargs = getattr(self.fs, "client_kwargs", None) or {}
        endpoint = client_kwargs.get("endpoint_url") or getattr(self.fs, "endpoint_url", None)
        if self.protocol in ("s3", "s3a"):
            endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
            bucket = self.base.split("/", 1)[0]
            return f"log root {self.url} (bucket {bucket!r} at {endpoint})"
        return f"log root {self.url}"

    def unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"{self.describe()} cannot be read: {type(exc).__name__}: {exc}; check "
            f"{LOG_ROOT_ENV}, the endpoint (AWS_ENDPOINT_URL) and the credentials"
        )

    def folder(self, kind: str, model: str) -> str:
        return f"{self.base}/{kind}/model={check_model_name(model)}"

    def key(self, kind: str, model: str, hour: datetime, name: str) -> str:
        """The object key (without the base) of a segment holding rows of ``hour``."""
        return f"{kind}/model={check_model_name(model)}/date={hour:%Y-%m-%d}/hour={hour:%H}/{name}"

    def url_of(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def files(
        self, kind: str, model: str, lo_ns: int | None = None, hi_ns: int | None = None
    ) -> list[str]:
        """The segments of ``model`` that may hold rows with ``lo_ns <= t < hi_ns`` (None:
        open), as file-system paths sorted by partition then name. Only the date and hour
        folders that overlap the range are listed."""
        folder = self.folder(kind, model)
        lo_hour = lo_ns // _HOUR_NS if lo_ns is not None else None
        hi_hour = -(-hi_ns // _HOUR_NS) if hi_ns is not None else None  # exclusive
        try:
            dates = self._dirs(folder)
            out: list[str] = []
            for date_dir in sorted(dates):
                m = _PART.match(date_dir)
                if m is None:
                    continue
                day = datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
                first = int(day.timestamp()) // 3_600
                if (lo_hour is not None and first + 24 <= lo_hour) or (
                    hi_hour is not None and first >= hi_hour
                ):
                    continue
                whole = (lo_hour is None or first >= lo_hour) and (
                    hi_hour is None or first + 24 <= hi_hour
                )
                if whole:
                    out.extend(sorted(self._parquet(self.fs.find(date_dir))))
                    continue
                for hour_dir in sorted(self._dirs(date_dir)):
                    h = _PART.match(hour_dir)
                    if h is None or h.group(2) is None:
                        continue
                    hour = first + int(h.group(2))
                    if (lo_hour is not None and hour < lo_hour) or (
                        hi_hour is not None and hour >= hi_hour
                    ):
                        continue
                    out.extend(sorted(self._parquet(self.fs.ls(hour_dir, detail=False))))
            return out
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise self.unreachable(exc) from exc
        except Exception as exc:  # botocore's own errors: endpoint down, bad credentials
            if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp"):
                raise self.unreachable(exc) from exc
            raise

    def has(self, kind: str, model: str) -> bool:
        """Whether ``model`` has any partition of ``kind`` under the root."""
        try:
            return bool(self._dirs(self.folder(kind, model)))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise self.unreachable(exc) from exc
        except Exception as exc:  # botocore's own errors: endpoint down, bad credentials
            if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp"):
                raise self.unreachable(exc) from exc
            raise

    def _dirs(self, path: str) -> list[str]:
        entries = self.fs.ls(path, detail=True)
        return [str(e["name"]).rstrip("/") for e in entries if e.get("type") == "directory"]

    @staticmethod
    def _parquet(paths: Any) -> list[str]:
        return [str(p) for p in paths if str(p).endswith(".parquet")]

    def open(self, path: str) -> Any:
        """A file object for a segment (read as a whole: segments are small)."""
        return self.fs.open(path, "rb", block_size=1 << 22, cache_type="readahead")


# -- writing ---------------------------------------------------------------------------------


def _split_by_hour(table: Any) -> list[tuple[datetime, Any]]:
    """The table's rows grouped by the UTC hour of ``timestamp``, in order of hour."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = table.column("timestamp")
    if not pa.types.is_timestamp(ts.type):
        ts = pc.cast(ts, pa.timestamp("ms", tz="UTC"))
    unit = ts.type.unit
    per = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[unit]
    raw = pc.cast(ts, pa.int64())
    hours = pc.divide(raw, pa.scalar(_HOUR_NS // per, pa.int64()))
    # floor division for instants before 1970
    hours = pc.if_else(
        pc.less(raw, 0), pc.subtract(pc.divide(pc.add(raw, 1), _HOUR_NS // per), 1), hours
    )
    values = pc.unique(pc.drop_null(hours)).to_pylist()
    if len(values) <= 1 and ts.null_count == 0:
        return [(_hour_start((values[0] if values else 0) * _HOUR_NS), table)]
    out = []
    for h in sorted(values):
        out.append((_hour_start(h * _HOUR_NS), table.filter(pc.equal(hours, h))))
    if ts.null_count:  # rows without a time: the hour of the epoch
        out.append((_hour_start(0), table.filter(pc.is_null(hours))))
    return out


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=65_536)
    return buf.getvalue()


def _hold(lock_path: Path) -> Any:
    """An open file holding an exclusive lock on ``lock_path`` for as long as it stays open,
    or None when another process holds it. The lock dies with its process, whatever pid the
    next process gets (pid 1 in every container). Without fcntl (Windows): a file handle,
    never contended."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+b")  # noqa: SIM115 - kept open on purpose
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


class SegmentSink:
    """Writes log segments to a shared root: one PUT each, spooled locally while the root
    cannot be written, uploaded oldest first by a thread when it answers again.

    ``on_state(spool_bytes, spool_segments)``, ``on_dropped(rows)`` and ``on_upload_error()``
    report to metrics. :meth:`write` never raises on an unreachable root.
    """

    def __init__(
        self,
        root: SharedRoot,
        spool: str | os.PathLike[str],
        *,
        max_spool_bytes: int | None = None,
        retry_s: float = 1.0,
        on_state: Callable[[int, int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_upload_error: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.max_spool_bytes = spool_max_bytes() if max_spool_bytes is None else max_spool_bytes
        self.retry_s = retry_s
        self.on_state, self.on_dropped, self.on_upload_error = on_state, on_dropped, on_upload_error
        self.replica = replica_name()
        self.spool_root = Path(spool)
        self.spool = self.spool_root / self.replica
        self._seq = 0
        self._lock = threading.Lock()  # the queue and counters
        self._put_lock = threading.Lock()  # one upload at a time: segments go up in order
        self._queue: deque[tuple[str, Path, int, int]] = deque()  # (key, file, bytes, rows)
        self._spool_bytes = 0
        self.dropped_rows = 0
        self.upload_errors = 0
        self.uploaded = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._adopted: list[Path] = []
        self._adopt()

    # -- state -------------------------------------------------------------------------------

    @property
    def spool_bytes(self) -> int:
        return self._spool_bytes

    @property
    def spool_segments(self) -> int:
        return len(self._queue)

    def _publish(self) -> None:
        if self.on_state is not None:
            self.on_state(self._spool_bytes, len(self._queue))

    # -- writing -----------------------------------------------------------------------------

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return f"{time.time_ns():020d}-{self.replica}-{seq:08d}.parquet"

    def write(self, kind: str, model: str, table: Any) -> int:
        """Write ``table`` (rows with a ``timestamp``) as segments of ``kind`` for ``model``;
        return the rows dropped because the spool was full (0 normally)."""
        dropped = 0
        for hour, part in _split_by_hour(table):
            key = self.root.key(kind, model, hour, self._name())
            dropped += self._write_one(key, _parquet_bytes(part), part.num_rows)
        return dropped

    def _write_one(self, key: str, data: bytes, rows: int) -> int:
        with self._put_lock:
            if not self._queue and self._put(key, data):
                return 0
            with self._lock:
                if self._spool_bytes + len(data) > self.max_spool_bytes:
                    self.dropped_rows += rows
                    first = self.dropped_rows == rows
                else:
                    first = None
            if first is not None:
                if self.on_dropped is not None:
                    self.on_dropped(rows)
                if first:
                    logger.error(
                        "log spool full (%d bytes, the bound is %d, %s): dropping rows until "
                        "%s answers; see modelloop_serving_log_spool_dropped_rows",
                        self._spool_bytes,
                        self.max_spool_bytes,
                        SPOOL_MAX_BYTES_ENV,
                        self.root.describe(),
                    )
                return rows
            path = self.spool / key
            try:
                with atomic_file(path) as fh:
                    fh.write(data)
            except OSError as exc:
                logger.error("log spool %s cannot be written: %s; rows dropped", self.spool, exc)
                with self._lock:
                    self.dropped_rows += rows
                if self.on_dropped is not None:
                    self.on_dropped(rows)
                return rows
            with self._lock:
                self._queue.append((key, path, len(data), rows))
                self._spool_bytes += len(data)
            self._publish()
        self._wake.set()
        return 0

    def _put(self, key: str, data: bytes) -> bool:
        """One PUT of a whole segment; False (logged once per outage) when it fails."""
        try:
            self.root.fs.pipe_file(f"{self.root.base}/{key}", data)
        except Exception as exc:  # endpoint down, bucket gone, credentials: spool and retry
            with self._lock:
                self.upload_errors += 1
                first = self.last_error is None
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self.on_upload_error is not None:
                self.on_upload_error()
            if first:
                logger.warning(
                    "%s cannot be written (%s); spooling segments to %s",
                    self.root.describe(),
                    self.last_error,
                    self.spool,
                )
            return False
        with self._lock:
            self.uploaded += 1
            if self.last_error is not None:
                logger.warning("%s answers again; uploading the spool", self.root.describe())
            self.last_error = None
        return True

    # -- the spool ---------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Queue the spooled segments of replicas that no longer run with this home (a
        restart after an outage), so that their rows still arrive. Each replica holds a lock
        on its spool folder while it runs; a folder whose lock can be taken is orphaned."""
        self._lockfile = _hold(self.spool / ".lock")
        for folder in sorted(self.spool_root.iterdir()):
            if folder == self.spool or not folder.is_dir():
                continue
            lock = _hold(folder / ".lock") if not folder.name.startswith(".adopted-") else None
            if lock is None and not folder.name.startswith(".adopted-"):
                continue  # its replica is running
            claimed = self.spool_root / f".adopted-{self.replica}-{folder.name}"
            try:
                folder.rename(claimed)  # atomic: one replica wins the folder
            except OSError:
                if lock is not None:
                    lock.close()
                continue
            if lock is not None:
                lock.close()
            files = sorted(claimed.rglob("*.parquet"), key=lambda p: p.name)
            for f in files:
                key = f.relative_to(claimed).as_posix()
                size = f.stat().st_size
                self._queue.append((key, f, size, 0))
                self._spool_bytes += size
            self._adopted.append(claimed)
        if self._queue:
            logger.warning("log spool: %d segments left by an earlier run", len(self._queue))

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="modelloop-logsink", daemon=True)
        self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.retry_s)
            self._wake.clear()
            if self._stop:
                return
            self.drain()

    def drain(self) -> bool:
        """Upload spooled segments, oldest first, until one fails; True when the spool is
        empty."""
        while True:
            with self._put_lock:
                with self._lock:
                    if not self._queue:
                        break
                    key, path, size, _rows = self._queue[0]
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    data = None
                if data is not None and not self._put(key, data):
                    return False
                with self._lock:
                    self._queue.popleft()
                    self._spool_bytes -= size
                path.unlink(missing_ok=True)
                self._publish()
        self._publish()
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after a last attempt to upload the spool (what is left stays in
        the spool folder, for the next run on this host)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            if not self.drain():
                break
        if self._queue:
            logger.error(
                "log spool: %d segments (%d bytes) not uploaded to %s; kept in %s",
                len(self._queue),
                self._spool_bytes,
                self.root.describe(),
                self.spool,
            )
        else:
            import shutil

            for folder in [*self._adopted, self.spool]:  # nothing left to upload: tidy up
                if not any(folder.rglob("*.parquet")):
                    shutil.rmtree(folder, ignore_errors=True)
        if self._lockfile is not None:  # what is left is the next run's to upload
            self._lockfile.close()
            self._lockfile = None


_SINKS: dict[tuple[str, str], SegmentSink] = {}
_SINKS_LOCK = threading.Lock()


def sink_for(home: str | os.PathLike[str]) -> SegmentSink | None:
    """This process's sink for the shared log root (started on first use), or None when the
    logs are local files. One per root and home, shared by the prediction log and feedback."""
    root = log_root(home)
    if not isinstance(root, str):
        return None
    with _SINKS_LOCK:
        sink = _SINKS.get((root, str(home)))
        if sink is None:
            sink = SegmentSink(SharedRoot(root, writer=True), Path(home) / "spool")
            _SINKS[(root, str(home))] = sink
            sink.start()
    return sink


def close_sinks(timeout_s: float = 10.0) -> None:
    """Upload what the spools hold (as far as the roots answer) and stop their threads."""
    with _SINKS_LOCK:
        sinks = list(_SINKS.values())
        _SINKS.clear()
    for sink in sinks:
        sink.close(timeout_s)
