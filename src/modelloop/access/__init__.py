"""Who may do what: users with a role (viewer < editor < deployer < admin), optionally limited
to some models; API tokens (shown once, stored as scrypt hashes, revocable at once); and the
records the store returns for them. The store keeps them (``SqlStore.create_user`` and
friends); ``modelloop.server`` checks them on every route and ``modelloop serve`` can too.
"""

from __future__ import annotations

from modelloop.access._records import TokenInfo, User
from modelloop.access._roles import Role
from modelloop.access._tokens import TOKEN_PREFIX, parse_token

__all__ = ["TOKEN_PREFIX", "Role", "TokenInfo", "User", "parse_token"]
