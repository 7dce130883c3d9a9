"""Reading request bodies safely: content type first, size before parsing, nothing deserialized
but JSON (and the V2 binary tensor extension, which is raw numbers and length-prefixed bytes)."""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any

from modelloop.serving._errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["inline_binary_tensors", "read_body"]

_JSON_TYPES = frozenset(("application/json", "text/json"))
_BINARY_HEADER = "inference-header-content-length"
_NUMPY = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


async def read_body(
    request: Request, limit: int, *, allow_binary: bool = False, require_type: bool = False
) -> bytes:
    """The body, refused with 415 unless JSON and with 413 past ``limit`` bytes, unparsed.

    A missing content type is taken as JSON (``curl --data-binary`` and tritonclient send none)
    unless ``require_type``: routes that change state need it, since a web page can send a body
    without a content type to any origin, but a JSON one only with the server's consent.
    A ``gzip`` or ``deflate`` body (``Content-Encoding``) is inflated, and ``limit`` holds for
    the inflated size too; any other encoding is refused with 415.
    """
    encoding = _content_encoding(request)
    ctype = request.headers.get("content-type")
    if ctype is None and require_type:
        raise UnsupportedMediaType(
            "this route needs a Content-Type: application/json header (none was given)"
        )
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        binary_ok = allow_binary and media == "application/octet-stream"
        if media not in _JSON_TYPES and not binary_ok:
            raise UnsupportedMediaType(
                f"content type {media or ctype!r} is not accepted; send application/json"
            )
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit() and len(length) <= 18):
            raise BadRequest(f"invalid Content-Length {length!r}")
        if int(length) > limit:
            raise PayloadTooLarge(f"the body is {int(length)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    return body if encoding is None else _inflate(body, encoding, limit)


def _content_encoding(request: Request) -> str | None:
    """``gzip`` or ``deflate`` when the body is compressed so, None when it is not (or is
    ``identity``); 415 naming any other encoding."""
    value = request.headers.get("content-encoding")
    if value is None:
        return None
    encoding = value.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {value[:40]!r} is not supported; send the body uncompressed, "
            "or compressed with gzip or deflate"
        )
    return encoding


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # deflate is zlib's format


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The inflated body; never more than ``limit + 1`` bytes are produced, so a small bomb
    costs no more memory than a body at the limit."""
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {encoding} data: {e}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"the body inflates to over the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"the body is not one complete {encoding} stream")
    return out


def json_header_length(request: Request) -> int | None:
    """The JSON part's length when the V2 binary tensor extension is used, else None."""
    value = request.headers.get(_BINARY_HEADER)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise BadRequest(f"invalid Inference-Header-Content-Length {value!r}")
    return int(value)


def inline_binary_tensors(payload: Any, blob: bytes) -> None:
    """Replace binary tensor references in a V2 request by their values, in place.

    Each input with ``parameters.binary_data_size`` takes that many bytes from ``blob``, in the
    order of the inputs; numbers are little-endian, BYTES elements are 4-byte length-prefixed.
    """
    import numpy as np

    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest("a V2 inference request is an object with an 'inputs' list")
    offset = 0
    for tensor in payload["inputs"]:
        if not isinstance(tensor, dict):
            raise BadRequest("every V2 input must be an object")
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        name = tensor.get("name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(blob):
            raise BadRequest(f"input {name!r}: binary data is shorter than binary_data_size")
        chunk = blob[offset : offset + size]
        offset += size
        del params["binary_data_size"]  # the data is inline now
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            tensor["data"] = _split_bytes(chunk, name)
        elif datatype in _NUMPY:
            dtype = np.dtype(_NUMPY[datatype])
            if size % dtype.itemsize:
                raise BadRequest(
                    f"input {name!r}: {size} bytes is not a whole number of {datatype}"
                )
            tensor["data"] = np.frombuffer(chunk, dtype=dtype).tolist()
        else:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}")
    if offset != len(blob):
        raise BadRequest(f"{len(blob) - offset} bytes of binary data belong to no input")


def _split_bytes(chunk: bytes, name: Any) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(chunk):
        if i + 4 > len(chunk):
            raise BadRequest(f"input {name!r}: truncated BYTES element")
        (n,) = struct.unpack_from("<I", chunk, i)
        i += 4
        if i + n > len(chunk):
            raise BadRequest(f"input {name!r}: truncated BYTES element")
        try:
            out.append(chunk[i : i + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: BYTES elements must be UTF-8 text") from None
        i += n
    return out
