"""The one validator for user-supplied artifact paths.

Every path a user gives for an artifact (``log_artifact(..., path=...)``, an HTTP route, a CLI
argument) passes through :func:`validate_artifact_path` before it touches a file system, an object
key or the metadata store.

The rule is an allow-list, not a list of known tricks. Nothing is decoded: a percent-encoded octet
is refused rather than interpreted, so ``%2e%2e`` and ``%252e%252e`` can never turn into ``..``
somewhere further down. After Unicode NFC normalisation, every character of every segment must be

* a letter or a combining mark (any script: ``données``, ``日本語``),
* a decimal digit (any script), or
* one of ``_ - . + = @ ,`` and the space.

Everything else is refused, which covers ``\\``, ``:``, ``#``, ``?``, ``%``, ``~``, control and
format characters, and lookalikes of the dot and the slash (U+FF0E, U+2024, U+2215, U+2044, U+FF0F).

Structure rules, each refused with its own message:

* the path is relative: no leading ``/``, no drive (``C:``), no UNC prefix;
* segments are separated by ``/``; an empty segment (``a//b``, a trailing ``/``) is refused rather
  than silently merged, because object stores treat ``a//b`` and ``a/b`` as different keys;
* ``.`` segments are dropped (``a/./b`` becomes ``a/b``); a ``..`` segment is refused;
* a segment does not start or end with a space and does not end with a dot (Windows strips those,
  so ``.. `` or ``...`` would name the parent directory there);
* at most 1024 UTF-8 bytes in the whole path (the S3 key limit) and 255 in a segment (the usual file
  system limit).
"""

from __future__ import annotations

import re
import unicodedata

from modelloop.exceptions import InvalidInput

__all__ = ["MAX_PATH_BYTES", "MAX_SEGMENT_BYTES", "validate_artifact_path"]

#: Longest accepted path, in UTF-8 bytes.
MAX_PATH_BYTES = 1024
#: Longest accepted segment, in UTF-8 bytes.
MAX_SEGMENT_BYTES = 255

_ALLOWED_PUNCTUATION = frozenset("_-.+=@, ")
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SHOWN_CHARS = 80  # a hostile path can be long; messages show its start


def validate_artifact_path(path: str) -> str:
    """Return ``path`` as a normalised relative POSIX path, or raise ``InvalidInput``.

    The returned path is NFC-normalised with ``.`` segments removed, and validating it again
    returns it unchanged. The rules are in this module's docstring.
    """
    if not isinstance(path, str):
        raise InvalidInput(f"artifact path must be a string, not {type(path).__name__}")
    if not path:
        raise InvalidInput("artifact path is empty")
    path = unicodedata.normalize("NFC", path)

    def refuse(problem: str) -> InvalidInput:
        shown = path if len(path) <= _SHOWN_CHARS else path[:_SHOWN_CHARS] + "..."
        return InvalidInput(f"artifact path {shown!r} {problem}")

    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise refuse(f"is longer than {MAX_PATH_BYTES} bytes")
    if _PERCENT_ENCODED.search(path):
        raise refuse("contains a percent-encoded character; give the path decoded")
    for char in path:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise refuse(f"contains the control or invisible character U+{ord(char):04X}")
    if "\\" in path:
        raise refuse("contains a backslash; separate segments with '/'")
    if path.startswith("/"):
        raise refuse("is absolute; give a path relative to the artifact root")
    if _DRIVE.match(path):
        raise refuse("starts with a drive letter; give a path relative to the artifact root")

    kept: list[str] = []
    for segment in path.split("/"):
        if segment == ".":
            continue
        if segment == "":
            raise refuse("has an empty segment ('//' or a trailing '/')")
        if segment == "..":
            raise refuse("has a '..' segment; artifact paths cannot leave the artifact root")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise refuse(f"has a segment longer than {MAX_SEGMENT_BYTES} bytes")
        if segment.startswith(" ") or segment.endswith((" ", ".")):
            raise refuse(
                f"has the segment {segment!r}: a segment may not start with a space "
                "or end with a space or a dot"
            )
        for char in segment:
            if not _allowed(char):
                name = unicodedata.name(char, "unnamed character")
                raise refuse(
                    f"contains {char!r} (U+{ord(char):04X} {name}); allowed are letters, digits, "
                    "spaces and _ - . + = @ ,"
                )
        kept.append(segment)
    if not kept:
        raise refuse("names no file (only '.' segments)")
    return "/".join(kept)


def _allowed(char: str) -> bool:
    if char in _ALLOWED_PUNCTUATION:
        return True
    category = unicodedata.category(char)
    return category[0] in "LM" or category == "Nd"
