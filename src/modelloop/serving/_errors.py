"""HTTP-level errors of the model server, on top of the library's error tree.

Each carries its status; the app turns any :class:`~modelloop.exceptions.ModelloopError` into
``{"error": message}`` with ``http_status``.
"""

from __future__ import annotations

from modelloop.exceptions import InvalidInput, ModelloopError

__all__ = [
    "BadRequest",
    "ModelRejectedInput",
    "Overloaded",
    "PayloadTooLarge",
    "PredictionFailed",
    "UnsupportedMediaType",
]


class BadRequest(InvalidInput):
    """The body is not valid JSON or not the shape the endpoint takes (400)."""

    http_status = 400


class PayloadTooLarge(InvalidInput):
    """The body is over the size limit, or holds more rows than allowed (413)."""

    http_status = 413


class UnsupportedMediaType(InvalidInput):
    """The body's content type is not JSON; it is never read, let alone deserialized (415)."""

    http_status = 415


class Overloaded(ModelloopError):
    """The model's queue is full; the client should retry after ``retry_after`` seconds (503)."""

    http_status = 503
    exit_code = 7

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelRejectedInput(InvalidInput):
    """The input fit the signature, but the model refused a value (e.g. an unknown category an
    encoder was told to reject) (422)."""

    http_status = 422


class PredictionFailed(ModelloopError):
    """The model failed for a reason that is not the input's fault (500)."""

    http_status = 500
