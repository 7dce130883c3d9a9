"""Roles, ordered by what they allow: each role may do everything the ones below it may."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from modelloop.exceptions import InvalidInput

__all__ = ["Role"]


class Role(StrEnum):
    """``viewer`` < ``editor`` < ``deployer`` < ``admin``; comparisons follow that rank.

    - viewer: reads everything it is allowed to see;
    - editor: also logs runs, datasets, artifacts and registers model versions;
    - deployer: also moves aliases, changes routing and acts on loops;
    - admin: also manages users and tokens.

    Equality and hashing stay those of the string (``Role.ADMIN == "admin"``).
    """

    VIEWER = "viewer"
    EDITOR = "editor"
    DEPLOYER = "deployer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for viewer up to 3 for admin."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: Any) -> Role:
        """The role named ``value`` (any case), or ``InvalidInput`` listing the valid names."""
        if isinstance(value, Role):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        names = ", ".join(r.value for r in cls)
        raise InvalidInput(f"unknown role {value!r}: use one of {names}")

    def _other_rank(self, other: object) -> int:
        if isinstance(other, Role):
            return other.rank
        if isinstance(other, str) and other in _RANK_BY_NAME:
            return _RANK_BY_NAME[other]
        raise TypeError(f"cannot compare a Role with {other!r}")

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank < self._other_rank(other)

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank <= self._other_rank(other)

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank > self._other_rank(other)

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank >= self._other_rank(other)


_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.DEPLOYER: 2, Role.ADMIN: 3}
_RANK_BY_NAME = {r.value: n for r, n in _RANK.items()}
