"""Which local files ``log_artifact`` stores, and under which artifact paths.

Symbolic links are never followed out of what the caller named:

* a link given directly (``log_artifact("model.bin")`` where ``model.bin`` is a link) is refused:
  the caller names the file itself (``os.path.realpath``), so that nothing is stored from a place
  the caller did not name;
* inside a directory, a link to a file that is inside the same directory is stored under the
  link's own path with the content of its target (the blob is shared: storage is by content);
* a link to a directory inside the same directory is skipped: its files are stored under their
  real paths, and following it could loop;
* a link whose target is outside the directory (or missing) refuses the whole call with
  ``InvalidInput`` naming the link and its target, before anything is uploaded.

Files that are neither regular files nor links (sockets, FIFOs, devices) are skipped.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from modelloop.artifacts._paths import validate_artifact_path
from modelloop.exceptions import InvalidInput, NotFound

__all__ = ["local_files"]


def local_files(
    local_path: str | os.PathLike[str], artifact_path: str | None
) -> list[tuple[Path, str]]:
    """``(file to read, artifact path)`` for every file ``log_artifact`` stores, sorted by path.

    A file lands at ``artifact_path`` (default: its name); a directory's files land below
    ``artifact_path`` (default: the directory's name). Every artifact path is validated and every
    link checked (rules in this module's docstring) before the list is returned.
    """
    src = Path(local_path)
    if src.is_symlink():
        raise InvalidInput(
            f"{str(src)!r} is a symbolic link to {os.readlink(src)!r}; modelloop does not follow "
            f"links given as artifacts: log the target itself ({os.path.realpath(src)!r})"
        )
    if not src.exists():
        raise NotFound(f"no such file or directory: {src}")
    base = validate_artifact_path(artifact_path if artifact_path is not None else src.name)
    if not src.is_dir():
        return [(src, base)]
    root = os.path.realpath(src)
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(src, followlinks=False, onerror=_raise):
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                _inside(path, root)  # a link to a folder inside is skipped, outside refused
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = _inside(path, root)
                if not os.path.isfile(target):
                    raise InvalidInput(
                        f"{path!r} is a symbolic link to {os.readlink(path)!r}, which is not a "
                        "file; remove the link or log its target separately"
                    )
                read = Path(target)
            elif stat.S_ISREG(mode):
                read = Path(path)
            else:
                continue
            relative = Path(path).relative_to(src).as_posix()
            found.append((read, validate_artifact_path(f"{base}/{relative}")))
    return sorted(found, key=lambda item: item[1])


def _inside(link: str, root: str) -> str:
    """The resolved target of ``link``, or ``InvalidInput`` when it leaves ``root``."""
    target = os.path.realpath(link)
    if os.path.commonpath([root, target]) != root:
        raise InvalidInput(
            f"{link!r} is a symbolic link to {os.readlink(link)!r}, outside the directory "
            f"being logged ({root!r}); modelloop does not store files from outside it: remove "
            "the link, or copy the file into the directory"
        )
    return target


def _raise(error: OSError) -> None:
    raise InvalidInput(f"cannot read the directory {error.filename!r}: {error.strerror}")
