"""Records to JSON and back: the wire format of the control-plane server and its client.

Records travel as JSON objects with one member per dataclass field. Non-finite floats (metric
values may be NaN or infinite) are written as the bare ``NaN``/``Infinity``/``-Infinity`` tokens
that Python's :mod:`json` reads and writes, so a value logged comes back exactly as it was.
Decoding rebuilds the frozen record, with read-only mappings and tuples as the store returns them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from modelloop.exceptions import StoreError
from modelloop.store._records import (
    Dataset,
    DatasetInput,
    Run,
    RunOwner,
    RunStatus,
)

__all__ = ["API_PREFIX", "KEY_HEADER", "decode", "dumps", "encode", "loads"]

#: Where the server mounts its API; the clients call under it.
API_PREFIX = "/api/v1"
#: The header a client sends with each write so that a retry never writes twice.
KEY_HEADER = "Idempotency-Key"

R = TypeVar("R")

# Fields whose value is itself a record or an enum; every other field is a plain JSON value,
# a mapping (made read-only) or a tuple.
_NESTED: dict[tuple[type, str], Any] = {
    (Run, "status"): RunStatus,
    (Run, "owner"): RunOwner,
    (DatasetInput, "dataset"): Dataset,
}


_PLAIN = frozenset({str, int, float, bool, type(None)})
#: the field names of each record class met (dataclasses.fields is slow to ask every time)
_FIELDS: dict[type, tuple[str, ...]] = {}


def encode(value: Any) -> Any:
    """A JSON-ready form of a record, a list of records, a mapping or a plain value."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list or kind is tuple:  # the hot path: columns of metric values
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: encode(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # NumPy, without numpy
        return value.tolist()
    return value


def decode(cls: type[R], data: Any) -> R:
    """The record of type ``cls`` that :func:`encode` turned into ``data``."""
    if not isinstance(data, Mapping):
        raise StoreError(f"the server sent {type(data).__name__} where a {cls.__name__} belongs")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        nested = _NESTED.get((cls, f.name))
        if value is None:
            kwargs[f.name] = None
        elif nested is not None:
            kwargs[f.name] = (
                nested(value)
                if isinstance(nested, type) and issubclass(nested, enum.Enum)
                else decode(nested, value)
            )
        elif isinstance(value, Mapping):
            kwargs[f.name] = MappingProxyType(dict(value))
        elif isinstance(value, list):
            kwargs[f.name] = tuple(value)
        else:
            kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise StoreError(f"the server sent a malformed {cls.__name__}: {exc}") from None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (non-finite floats as ``NaN``/``Infinity`` tokens)."""
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps`."""
    return json.loads(data)
