"""The request ids a server answered, remembered so feedback can be checked against them.

Each model keeps its last ``max_ids`` request ids (the oldest are forgotten first). Ids the
server makes itself start with a tag drawn at start, so it can tell its own ids from others:

- an id it answered (or a row id ``ID/i`` of a multi-row request) is *verified*;
- an id of its own making that it never answered, while nothing was forgotten yet, is *never*
  answered: a typo or a forgery, refused; so is the bare id of a multi-row request, whose
  rows are logged as ``ID/0``, ``ID/1``, ...;
- anything else is *unverified*: a client's own id, or one answered before this process
  started, by another replica, or forgotten since. Labels for those are taken, and counted.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["FeedbackCheck", "ServedIds"]

_HEX = frozenset("0123456789abcdef")


@dataclass
class FeedbackCheck:
    """How the request ids of one feedback request stand."""

    verified: int = 0
    unverified: int = 0
    never: list[str] = field(default_factory=list)


class _Model:
    __slots__ = ("evicted", "ids")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # request id -> rows, oldest first
        self.evicted = 0


class ServedIds:
    """The last ``max_ids`` request ids answered per model. Not thread-safe: the event loop
    owns it."""

    def __init__(self, max_ids: int = 100_000) -> None:
        self.max_ids = max_ids
        self.tag = secrets.token_hex(4)  # 8 hex digits that start every id made here
        self._key = secrets.token_bytes(32)
        self._count = itertools.count()
        self._models: dict[str, _Model] = {}

    def new_id(self) -> str:
        """A fresh request id: 32 hex digits, starting with this server's tag. The other 24
        are a keyed hash of a counter: never repeated, and no more guessable than random ones
        without the key drawn at start (which never leaves the process), at a fraction of the
        cost of reading the system's randomness for every request."""
        n = next(self._count).to_bytes(8, "little")
        return self.tag + hashlib.blake2b(n, key=self._key, digest_size=12).hexdigest()

    def _ours(self, rid: str) -> bool:
        return len(rid) == 32 and rid.startswith(self.tag) and set(rid) <= _HEX

    def record(self, model: str, rid: str, rows: int) -> None:
        """Remember that ``model`` answered request ``rid`` of ``rows`` rows."""
        served = self._models.get(model)
        if served is None:
            served = self._models[model] = _Model()
        ids = served.ids
        ids.pop(rid, None)  # an id used again moves to the newest end
        ids[rid] = rows
        if len(ids) > self.max_ids:
            del ids[next(iter(ids))]
            served.evicted += 1

    def check(self, model: str, rids: Iterable[str]) -> FeedbackCheck:
        """Sort the ids of labels for ``model`` into verified, unverified and never answered."""
        served = self._models.get(model) or _Model()
        ids = served.ids
        out = FeedbackCheck()
        for rid in rids:
            rows = ids.get(rid)
            if rows == 1:
                out.verified += 1
                continue
            base, sep, index = rid.rpartition("/")  # a multi-row request's rows are ID/i
            of = ids.get(base) if sep else None
            if of is not None and of > 1:  # a row of a multi-row request answered here
                if index.isascii() and index.isdigit() and int(index) < of:
                    out.verified += 1
                else:
                    out.never.append(rid)
                continue
            # The id of a multi-row request names no row; an id of ours is known if answered.
            mine = self._ours(base if sep else rid) and not served.evicted
            if rows is not None or mine:
                out.never.append(rid)
            else:
                out.unverified += 1
        return out
