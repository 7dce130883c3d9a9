"""API tokens: their format, how they are stored, and how one is checked.

A token reads ``mlt_<id>_<secret>``: ``mlt_`` says what it is (secret scanners and people spot
it in a log or a paste), ``<id>`` (16 hex digits) names its row in the store, ``<secret>`` is 32
random bytes (256 bits, base64url). The plaintext is shown once, at creation; the store keeps
only a hash of the secret.

**Why scrypt, not a keyed hash.** A keyed hash (HMAC with a server-side key) is cheap to check
but needs that key in every process that creates or checks tokens: the server, the CLI working
directly on the database, each ``modelloop serve`` replica. A key that must be everywhere gets
copied everywhere, and a lost key invalidates every token. scrypt needs no secret besides the
token: a leaked database gives an attacker nothing to check guesses against quickly, and the
256-bit secret makes guessing hopeless anyway (the KDF is defence in depth). Its cost (tens of
milliseconds) is paid once per token and process: :class:`VerifiedCache` remembers a SHA-256 of
each secret that passed scrypt, so every later request costs one SHA-256 and one constant-time
comparison. The cache never decides alone: every request still reads the token's row and its
user (revocation and disabling take effect at once), and an entry is used only while the stored
hash it was verified against is unchanged.

scrypt is what an attacker could make the server spend: a token id that is unknown costs one
read and no scrypt; a wrong secret for an id verified before costs no scrypt either (the cache
knows the one right secret); and an id not yet verified in this process gets no scrypt for the
rest of a :data:`FAILURE_WINDOW_S` window once :data:`MAX_FAILURES` wrong secrets were tried in
it, so guessing at a known id cannot keep a core busy (the holder of the right secret is then
refused until the window ends, and only if nobody verified it here before). Token ids are not
secret (they are listed and audited); the secrets are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from modelloop.exceptions import InvalidInput

__all__ = [
    "FAILURE_WINDOW_S",
    "MAX_FAILURES",
    "TOKEN_PREFIX",
    "ParsedToken",
    "VerifiedCache",
    "hash_secret",
    "new_token",
    "parse_token",
    "verify_secret",
]

TOKEN_PREFIX = "mlt_"
_ID_HEX = 16
_SECRET_BYTES = 32
_TOKEN = re.compile(rf"{TOKEN_PREFIX}([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_\-]{{43}})")
# scrypt cost: n=2**14, r=8 uses 16 MiB and ~50 ms, OWASP's minimum for interactive use.
_LOG2_N, _R, _P, _DKLEN = 14, 8, 1, 32
_SCHEME = "scrypt"
#: Wrong secrets tried for a token id never verified here, within a window of this many seconds,
#: after which its further secrets are refused without running scrypt until the window ends.
MAX_FAILURES = 3
FAILURE_WINDOW_S = 1.0


@dataclass(frozen=True)
class ParsedToken:
    """A token split into its id and secret; the secret never shows in ``repr``."""

    token_id: str
    secret: str = field(repr=False)


def new_token() -> tuple[str, str, str]:
    """A fresh ``(token_id, secret, plaintext)``."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    secret = _b64(secrets.token_bytes(_SECRET_BYTES))
    return token_id, secret, f"{TOKEN_PREFIX}{token_id}_{secret}"


def parse_token(plaintext: str) -> ParsedToken | None:
    """The id and secret of a well-formed token, or None (never an error naming the token)."""
    if not isinstance(plaintext, str):
        return None
    m = _TOKEN.fullmatch(plaintext.strip())
    return None if m is None else ParsedToken(m.group(1), m.group(2))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + (1 << 20)
    )


def hash_secret(secret: str) -> str:
    """``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`` of ``secret`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _LOG2_N, _R, _P, _DKLEN)
    return f"{_SCHEME}${_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison)."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        expected = _unb64(digest)
        if scheme != _SCHEME or not (1 <= int(log2_n) <= 20) or not (1 <= int(r) <= 32):
            return False
        actual = _scrypt(secret, _unb64(salt), int(log2_n), int(r), int(p), len(expected))
    except (ValueError, TypeError):  # a malformed stored hash verifies nothing
        return False
    return hmac.compare_digest(actual, expected)


def _fingerprint(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class VerifiedCache:
    """Secrets that passed scrypt, remembered as SHA-256 per token id (bounded, thread-safe).

    ``check`` answers True (this exact secret was verified against this exact stored hash),
    False (another secret was verified for the id: a token has one secret, so this one is
    wrong, and no scrypt is spent on it) or None (unknown: verify with scrypt, then ``add``).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise InvalidInput(f"max_entries must be at least 1, got {max_entries}")
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        # token id -> (start of its failure window, wrong secrets in it)
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def may_verify(self, token_id: str, now: float | None = None) -> bool:
        """False while :data:`MAX_FAILURES` wrong secrets for this (unverified) id were tried
        in the current window: refuse without spending scrypt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._failures.get(token_id)
        if entry is None or now - entry[0] >= FAILURE_WINDOW_S:
            return True
        return entry[1] < MAX_FAILURES

    def failed(self, token_id: str, now: float | None = None) -> None:
        """Note a wrong secret for ``token_id`` (see :meth:`may_verify`)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, count = self._failures.get(token_id, (now, 0))
            if now - start >= FAILURE_WINDOW_S:
                start, count = now, 0
            self._failures[token_id] = (start, count + 1)
            self._failures.move_to_end(token_id)
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)

    def check(self, token_id: str, stored: str, secret: str) -> bool | None:
        with self._lock:
            entry = self._entries.get(token_id)
            if entry is not None:
                self._entries.move_to_end(token_id)
        if entry is None or not hmac.compare_digest(entry[0], stored):
            return None
        return hmac.compare_digest(entry[1], _fingerprint(secret))

    def add(self, token_id: str, stored: str, secret: str) -> None:
        with self._lock:
            self._failures.pop(token_id, None)
            self._entries[token_id] = (stored, _fingerprint(secret))
            self._entries.move_to_end(token_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, token_id: str) -> None:
        with self._lock:
            self._entries.pop(token_id, None)
