"""The current data of a monitoring run: a prediction log folder, one Parquet file, or a table
in memory — streamed as record batches for drift, and offered to DuckDB for the label join."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._fs import is_url
from modelloop.exceptions import InvalidInput, NotFound
from modelloop.monitoring._windows import PredictionLog

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Source", "open_source", "sql_ident", "sql_paths"]


class Source:
    """Current data: streamed as record batches for drift, queried with DuckDB for labels."""

    columns: list[str]
    windowed = False  # whether the run's window selects rows (prediction logs only)

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        raise NotImplementedError

    def relation(self, con: Any) -> str:
        """A DuckDB relation (SQL text) over the whole source."""
        raise NotImplementedError


class _ParquetFiles(Source):
    """A prediction log folder (windowed, row groups pruned) or one Parquet file (taken whole)."""

    def __init__(self, log: PredictionLog | None = None, file: Path | None = None) -> None:
        import pyarrow.parquet as pq

        self.log, self.file = log, file
        self.windowed = log is not None
        if log is not None:
            schema = log.schema()
            if schema is None:
                raise NotFound(f"the prediction log at {log.path} is empty")
            self.files = [str(f) for f in log.files()]  # as listed once for this run
        else:
            assert file is not None
            schema = pq.read_schema(file)
            self.files = [str(file)]
        self.columns = list(schema.names)

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        if self.log is not None:
            yield from self.log.batches(window, columns, **kw)
            return
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(self.file).iter_batches(batch_size=65_536, columns=columns)

    def relation(self, con: Any) -> str:
        files = self.log.duckdb_files(con) if self.log is not None else self.files
        return (
            f"read_parquet([{sql_paths(files)}], union_by_name = true, hive_partitioning = false)"
        )


class _FrameSource(Source):
    """A table in memory (a DataFrame or a CSV file), taken whole as the window."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.table = frame
        self.columns = [str(c) for c in frame.columns]

    def batches(self, window: Any, columns: list[str], **kw: Any) -> Iterator[Any]:
        import pyarrow as pa

        step = 262_144
        for start in range(0, len(self.table), step):
            part = self.table.iloc[start : start + step][columns]
            yield pa.RecordBatch.from_pandas(part, preserve_index=False)

    def relation(self, con: Any) -> str:
        con.register("current_frame", self.table)
        return "current_frame"


def open_source(home: Path, name: str, data: Any, window: Any = None) -> Source:
    """The current data: ``data``, or the model's prediction log (only the segments of
    ``window`` on a shared log root)."""
    import pandas as pd

    if data is None:
        log = PredictionLog.for_model(home, name)
        return _ParquetFiles(log=log.within(window) if window is not None else log)
    if isinstance(data, pd.DataFrame):
        return _FrameSource(data)
    if is_url(data):
        return _FrameSource(read_url(data))
    path = Path(data)
    if path.is_dir():
        return _ParquetFiles(log=PredictionLog(path))
    if not path.is_file():
        raise NotFound(f"no such data file or folder: {path}")
    if path.suffix == ".parquet":
        return _ParquetFiles(file=path)
    if path.suffix in (".csv", ".gz", ".zip"):
        return _FrameSource(pd.read_csv(path))
    raise InvalidInput(f"cannot read {path.name}: use a .parquet or .csv file, or a folder")


def read_url(url: str) -> pd.DataFrame:
    """A Parquet or CSV file named by a URL (``s3://bucket/key.parquet``), read whole through
    fsspec; ``InvalidInput`` naming what to install when the protocol has no file system."""
    import pandas as pd

    from modelloop._fs import url_suffix

    try:
        if url_suffix(url) == ".parquet":
            return pd.read_parquet(url)
        return pd.read_csv(url)
    except FileNotFoundError:
        raise NotFound(f"no such data file: {url}") from None
    except ImportError as exc:
        raise InvalidInput(
            f"cannot read {url}: {exc} (for s3:// URLs: pip install 'modelloop[s3]')"
        ) from None


def sql_ident(name: str) -> str:
    """A column name as a quoted SQL identifier (names come from users and files)."""
    return '"' + name.replace('"', '""') + '"'


_GLOB = set("*?[]{}")


def sql_paths(paths: Iterable[str | Path]) -> str:
    """Files as a DuckDB list of string literals. DuckDB expands glob characters in file names,
    so paths holding them are refused rather than read as patterns."""
    out = []
    for p in map(str, paths):
        if _GLOB & set(p):
            raise InvalidInput(f"file path {p!r} holds a glob character (one of *?[]{{}})")
        out.append("'" + p.replace("'", "''") + "'")
    return ", ".join(out)
