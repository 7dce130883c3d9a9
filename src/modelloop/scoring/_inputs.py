"""Finding the input files of a scoring job and cutting them into parts.

A *part* is the unit of work and of restart: one CSV file, or a run of consecutive row groups
of one Parquet file holding about ``part_rows`` rows. Its key is derived from the file's path
and its first row group, so the same input cut the same way gives the same keys on every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from modelloop.exceptions import InvalidInput, NotFound, SchemaMismatch, StoreError

__all__ = ["InputFile", "Part", "find_inputs", "open_fs", "plan_parts"]

_SUFFIXES = (".parquet", ".pq", ".csv")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file: its URL or path as given to fsspec, and its kind."""

    path: str  # as the user sees it: a local path or an s3:// URL
    fs_path: str  # as the file system names it
    kind: str  # "parquet" or "csv"


@dataclass(frozen=True, slots=True)
class Part:
    """Rows ``[first_row, first_row + rows)`` of one file (its row groups ``row_groups``)."""

    key: str
    file: InputFile
    row_groups: tuple[int, ...] | None  # None: the whole file (CSV)
    first_row: int
    rows: int | None  # None: not known before reading (CSV)


def open_fs(location: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec file system of ``location`` and its path there."""
    from fsspec.core import url_to_fs

    options = dict(storage_options or {})
    if "://" in location and not location.startswith("file://"):
        # a new instance: a cached one keeps the endpoint and credentials of its first use
        options.setdefault("skip_instance_cache", True)
    try:
        return url_to_fs(location, **options)
    except ImportError as exc:
        raise InvalidInput(
            f"cannot open {location}: {exc} (for s3:// URLs: pip install 'modelloop[s3]')"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot open {location}: {exc}") from None


def _kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    if low.endswith(".csv"):
        return "csv"
    return None


def _unreachable(location: str, exc: Exception) -> StoreError:
    where = "the object store" if "://" in location else "the file system"
    return StoreError(
        f"cannot list {location}: {where} did not answer ({type(exc).__name__}: {exc}); for "
        "S3 check the endpoint (AWS_ENDPOINT_URL), the credentials and the bucket"
    )


def find_inputs(data: str, storage_options: dict[str, Any] | None = None) -> list[InputFile]:
    """The Parquet and CSV files ``data`` names: a file, a folder (every such file under it) or
    a glob. ``NotFound`` when nothing matches, ``StoreError`` when the store does not answer."""
    fs, path = open_fs(data, storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    remote = protocol not in ("file", "local")

    def shown(p: str) -> str:
        return f"{protocol}://{p}" if remote else p

    try:
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
            files = [p for p in found if fs.isfile(p)]
        elif fs.isdir(path):
            files = sorted(p for p in fs.find(path) if _kind(p))
            files = [p for p in files if not p.rsplit("/", 1)[-1].startswith((".", "_"))]
        elif fs.isfile(path):
            files = [path]
        else:
            files = []
    except (FileNotFoundError, NotADirectoryError):
        files = []
    except PermissionError as exc:
        raise InvalidInput(f"cannot read {data}: permission denied ({exc})") from None
    except OSError as exc:
        raise _unreachable(data, exc) from exc
    except Exception as exc:  # botocore's connection errors are not OSErrors
        if type(exc).__module__.startswith(("botocore", "aiobotocore", "aiohttp")):
            raise _unreachable(data, exc) from exc
        raise
    out = []
    unknown = []
    for p in files:
        kind = _kind(p)
        if kind is None:
            unknown.append(shown(p))
            continue
        out.append(InputFile(path=shown(p), fs_path=p, kind=kind))
    if not out:
        extra = f" (files of another kind: {unknown[:5]})" if unknown else ""
        raise NotFound(
            f"no input files match {data}: expected Parquet (.parquet) or CSV (.csv) files, "
            f"a folder holding them, or a glob{extra}"
        )
    if unknown:
        raise InvalidInput(
            f"{data} matches files that are neither Parquet nor CSV: {unknown[:5]}; narrow the glob"
        )
    return out


def _key(file: InputFile, first: int) -> str:
    digest = hashlib.sha256(file.path.encode()).hexdigest()[:16]
    return f"{digest}-{first:06d}"


def plan_parts(fs: Any, files: list[InputFile], columns: list[str], part_rows: int) -> list[Part]:
    """The parts of ``files``; ``SchemaMismatch`` naming every file and column missing (all at
    once), ``InvalidInput`` naming a file that cannot be read."""
    import pyarrow.parquet as pq

    parts: list[Part] = []
    problems: list[str] = []
    for f in files:
        try:
            if f.kind == "csv":
                header = _csv_header(fs, f)
                missing = [c for c in columns if c not in header]
                if missing:
                    problems.append(f"{f.path} lacks columns {missing}")
                    continue
                parts.append(Part(_key(f, 0), f, None, 0, None))
                continue
            with fs.open(f.fs_path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                names = set(meta.schema.to_arrow_schema().names)
        except (OSError, ValueError) as exc:
            import pyarrow as pa

            if isinstance(exc, ValueError | pa.ArrowException):
                raise InvalidInput(
                    f"cannot read {f.path}: not a readable {f.kind} file ({exc})"
                ) from None
            raise InvalidInput(f"cannot read {f.path}: {exc}") from exc
        missing = [c for c in columns if c not in names]
        if missing:
            problems.append(f"{f.path} lacks columns {missing}")
            continue
        group: list[int] = []
        rows = start = 0
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if group and rows + n > part_rows:
                parts.append(Part(_key(f, group[0]), f, tuple(group), start, rows))
                start += rows
                group, rows = [], 0
            group.append(i)
            rows += n
        if group or not parts or parts[-1].file != f:
            parts.append(Part(_key(f, group[0] if group else 0), f, tuple(group), start, rows))
    if problems:
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise SchemaMismatch(
            "input does not hold the model's columns: " + "; ".join(shown),
            column=None,
        )
    return parts


def _csv_header(fs: Any, f: InputFile) -> list[str]:
    import csv
    import io

    with fs.open(f.fs_path, "rb") as fh:
        line = fh.readline()
    text = line.decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(text)), [])
