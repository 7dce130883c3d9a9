"""Durable local writes (write to a temporary name, fsync, rename into place), and telling a
URL from a local path."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "fsync_dir", "is_url", "url_suffix"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's new entries durable; a no-op where directories cannot be fsynced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open a directory; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on directories
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` whole, or not at all.

    The data goes to a hidden temporary file beside ``path``; on success it is flushed, fsynced
    and renamed over ``path``; on any error the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL (``s3://bucket/key``, ``file:///tmp/x``) rather than a
    path. A URL must never go through :class:`pathlib.Path`, which folds ``//`` into ``/``."""
    return isinstance(location, str) and _URL.match(location) is not None


def url_suffix(location: str) -> str:
    """The file extension of a path or URL (``.parquet``), lower case, without any query."""
    from pathlib import PurePosixPath
    from urllib.parse import urlsplit

    path = urlsplit(location).path if is_url(location) else location
    return PurePosixPath(path).suffix.lower()
