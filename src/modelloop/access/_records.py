"""Frozen records of users and tokens, as the store returns them."""

from __future__ import annotations

from dataclasses import dataclass

from modelloop.access._roles import Role

__all__ = ["TokenInfo", "User"]


@dataclass(frozen=True, slots=True)
class User:
    """A user of the control-plane server and the model server.

    ``models`` limits an editor or deployer to those registered models (None: every model).
    A disabled user's tokens stop working at once; users are disabled, never deleted, so the
    audit log always names someone who existed.
    """

    name: str
    role: Role
    models: tuple[str, ...] | None
    created_at: int  # ms since the epoch
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known of a token besides its secret (which is shown once, at creation)."""

    token_id: str
    user: str
    description: str
    created_at: int  # ms since the epoch
    revoked_at: int | None = None
    last_used_at: int | None = None

    @property
    def active(self) -> bool:
        """Not revoked (the user may still be disabled)."""
        return self.revoked_at is None
