"""The one exception tree of modelloop.

Every error the library raises on purpose derives from :class:`ModelloopError`. Each class carries
the HTTP status a server answers with and the exit code the CLI ends with, so that mapping lives in
exactly one place.
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorrupted",
    "Conflict",
    "EncryptionKeyError",
    "Forbidden",
    "InvalidInput",
    "ModelloopError",
    "NotFound",
    "SchemaMismatch",
    "ServiceUnavailable",
    "StoreError",
    "Unauthorized",
    "UnsafeArtifact",
]


class ModelloopError(Exception):
    """Root of every error modelloop raises on purpose."""

    http_status: int = 500
    exit_code: int = 1


class InvalidInput(ModelloopError):
    """A value given by the caller is malformed or out of range; the message names it."""

    http_status = 400
    exit_code = 2


class SchemaMismatch(InvalidInput):
    """Data does not match a model signature or a dataset schema; the message names the column."""

    http_status = 422

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class NotFound(ModelloopError):
    """The named experiment, run, model, version, alias, artifact or dataset does not exist."""

    http_status = 404
    exit_code = 3


class Conflict(ModelloopError):
    """The change contradicts what is stored (a name taken, a param logged with another value)."""

    http_status = 409
    exit_code = 4


class ArtifactCorrupted(ModelloopError):
    """A stored blob does not match its sha256 digest: it was altered or truncated."""

    http_status = 500
    exit_code = 5


class EncryptionKeyError(ModelloopError):
    """An encrypted artifact blob needs a key that is not configured (another key id, or none)."""

    http_status = 500
    exit_code = 14


class UnsafeArtifact(ModelloopError):
    """Loading would run untrusted code: an untrusted skops type, or pickle without the opt-in."""

    http_status = 422
    exit_code = 6


class StoreError(ModelloopError):
    """The metadata or artifact store could not complete an operation (unreachable, I/O failure)."""

    http_status = 503
    exit_code = 7


class ServiceUnavailable(ModelloopError):
    """A service modelloop drives did not answer or refused (a model server's admin API)."""

    http_status = 503
    exit_code = 13


class Unauthorized(ModelloopError):
    """No valid credentials were presented."""

    http_status = 401
    exit_code = 8


class Forbidden(ModelloopError):
    """The credentials are valid but their role does not allow the operation."""

    http_status = 403
    exit_code = 9
