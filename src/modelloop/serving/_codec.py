"""Request decoding and validation for the model server (no HTTP here).

Decoding checks every value against the model's :class:`~modelloop.models.Signature` in plain
Python over the parsed JSON (no pandas per request), at least as strictly as
``Signature.validate``: whatever :func:`decode_records` or :func:`decode_v2` accepts, the
signature accepts too, so the server can merge many requests and build one DataFrame per
micro-batch. Values come out normalised (integral floats in integer columns become ``int``,
numbers in float columns become ``float``, NaN becomes ``None``, categories take the signature's
own value), which keeps a merged batch exact.

Errors name the field and the row: :class:`BadRequest` (400) for a body that is not JSON or not
the expected shape, :class:`~modelloop.exceptions.SchemaMismatch` (422) for wrong, missing or
extra columns and values, :class:`PayloadTooLarge` (413) for more rows than allowed.

Response encoding and V2 metadata live in :mod:`modelloop.serving._encode`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import SchemaMismatch
from modelloop.models._dtypes import is_float
from modelloop.serving._encode import input_datatype, output_names
from modelloop.serving._errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modelloop.models import ColumnSpec, Signature

__all__ = [
    "Decoded",
    "decode_records",
    "decode_v2",
    "parse_json",
    "to_frame",
    "unseen_counts",
]

MAX_ID_LENGTH = 256  # request ids and routing keys end up in logs and responses
#: Longest string value of an input column by default, in characters: requests are logged, and
#: the log holds them in memory until written.
MAX_STRING_LENGTH = 65_536
_F32_MAX = 3.4028234663852886e38
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_V2_INTS = {name.upper(): rng for name, rng in _INT_RANGES.items()}
_V2_FLOATS = frozenset(("FP16", "FP32", "FP64"))
_V2_DATATYPES = frozenset((*_V2_INTS, *_V2_FLOATS, "BOOL", "BYTES"))
_RECORD_KEYS = frozenset(("records", "columns", "id", "request_id", "key"))
# A strict subset of ISO 8601 that pandas reads the same way: date, optional time, optional
# offset (only after a time).
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?"
)
# Years that stay in range whatever the offset or zone: Signature.validate parses a batch of
# strings through nanosecond timestamps (1677 to 2262), whatever the column's unit.
_YEARS = (1678, 2261)


@dataclass(slots=True)
class Decoded:
    """One decoded request: its columns in signature order and what travels with them."""

    columns: dict[str, list[Any]]  # plain Python values, None for missing
    n_rows: int
    request_id: str | None  # the client's id ("id" in V2, "id" or "request_id" in v1)
    key: str | None  # sticky routing key (v1 "key"; V2 parameters["key"])
    outputs: list[str] | None  # V2 requested output names (None = all)
    binary_outputs: frozenset[str] = frozenset()  # V2 outputs to answer as binary tensor data


# -- JSON --------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice raises (json would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object)


def parse_json(body: bytes) -> Any:
    """The parsed JSON body; ``BadRequest`` naming the error if it is not JSON, or if an object
    gives a key twice (which value was meant is anyone's guess).

    The NaN and Infinity tokens are read as floats: NaN is a missing value where the column
    admits one, an infinite number is always a ``SchemaMismatch`` naming the field.
    """
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except _DuplicateKey as e:
        raise BadRequest(
            f"request body is not valid here: the key {_show(e.key)} appears twice in one "
            "object; give each key once"
        ) from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise BadRequest(f"request body is not valid JSON: {e}") from None


# -- per-column value checks ------------------------------------------------------------------

# A check takes the column's values (a list the decoder owns), validates them, normalises them
# in place and returns the list; rows in errors are positions in the request.
_Check = Callable[[list[Any]], list[Any]]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(name: str, row: int, message: str) -> SchemaMismatch:
    return SchemaMismatch(f"column {name!r}, row {row}: {message}", column=name)


def _wrong(name: str, row: int, value: Any, expected: str) -> SchemaMismatch:
    return _bad(name, row, f"expected {expected}, got {_show(value)}")


def _missing(name: str, row: int) -> SchemaMismatch:
    return _bad(name, row, "missing value not allowed; the model was trained without them here")


def _is_missing(v: Any) -> bool:
    return v is None or (type(v) is float and v != v)


def _admitted_missing(name: str, row: int, value: Any, missing_ok: bool) -> bool:
    """Whether ``value`` is a missing value the column admits; ``SchemaMismatch`` for one it
    does not; False for a value that is not missing at all."""
    if not _is_missing(value):
        return False
    if not missing_ok:
        raise _missing(name, row)
    return True


def _float_check(name: str, dtype: str, missing_ok: bool) -> _Check:
    limit = _F32_MAX if dtype.lower() == "float32" else math.inf
    what = f"a number ({dtype})"

    def check(values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            t = type(v)
            if t is float:
                if v - v == 0.0:  # finite
                    if abs(v) > limit:
                        raise _bad(name, i, f"{_show(v)} is out of range for {dtype}")
                    continue
                if v != v:
                    if not missing_ok:
                        raise _missing(name, i)
                    values[i] = None
                    continue
                raise _bad(name, i, f"expected a finite number ({dtype}), got {v!r}")
            if t is int:
                try:
                    f = float(v)
                except OverflowError:
                    raise _bad(name, i, f"{_show(v)} is out of range for {dtype}") from None
                if abs(f) > limit:
                    raise _bad(name, i, f"{_show(v)} is out of range for {dtype}")
                values[i] = f
            elif v is None:
                if not missing_ok:
                    raise _missing(name, i)
            else:
                raise _wrong(name, i, v, what)
        return values

    return check


def _int_bounds(spec: ColumnSpec) -> tuple[int, int, bool]:
    """The integers a column takes, and whether it takes missing values."""
    lo, hi = _INT_RANGES[spec.dtype.lower()]
    # numpy integers hold no missing value whatever the spec says; the masked ones do
    missing_ok = spec.missing_allowed and spec.dtype[0] in "IU"
    if missing_ok:
        # Signature.validate reads an integer column with missing values through float64, so a
        # merged batch holding a None anywhere keeps integers exact only within +-2**53.
        lo, hi = max(lo, -(2**53)), min(hi, 2**53)
    return lo, hi, missing_ok


def _int_check(name: str, dtype: str, lo: int, hi: int, missing_ok: bool) -> _Check:
    what = f"an integer ({dtype})"
    limits = f"{lo} to {hi}" + (", as it admits missing values" if hi == 2**53 else "")

    def check(values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            t = type(v)
            if t is int:
                if lo <= v <= hi:
                    continue
            elif t is float:
                if v != v:
                    if not missing_ok:
                        raise _missing(name, i)
                    values[i] = None
                    continue
                if v - v != 0.0:
                    raise _bad(name, i, f"expected a finite number ({dtype}), got {v!r}")
                if not v.is_integer():
                    raise _bad(name, i, f"expected {what}, got {v!r} with a fraction")
                v = values[i] = int(v)
                if lo <= v <= hi:
                    continue
            elif v is None:
                if not missing_ok:
                    raise _missing(name, i)
                continue
            else:
                raise _wrong(name, i, v, what)
            raise _bad(name, i, f"{_show(v)} is out of range for {dtype} ({limits})")
        return values

    return check


def _type_check(name: str, dtype: str, kind: type, what: str, missing_ok: bool) -> _Check:
    expected = f"{what} ({dtype})"
    text = kind is str

    def check(values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            if type(v) is kind:
                if text and isinstance(v, str) and not v.isascii():
                    _check_text(name, i, v)
                continue
            if _admitted_missing(name, i, v, missing_ok):
                values[i] = None
                continue
            raise _wrong(name, i, v, expected)
        return values

    return check


def _check_text(name: str, row: int, value: str) -> None:
    """Strings must be encodable (JSON escapes can spell lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(name, row, f"{_show(value)} is not valid Unicode text") from None


def _category_check(name: str, categories: tuple[Any, ...], missing_ok: bool) -> _Check:
    # Booleans match only boolean categories (never 1 or 0); numbers match by value, so 2
    # finds the category 2.0; the value becomes the signature's own category.
    numbers_and_text = {c: c for c in categories if type(c) is not bool}
    flags = {c: c for c in categories if type(c) is bool}
    shown = list(categories[:20]) + (["..."] if len(categories) > 20 else [])

    def check(values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            t = type(v)
            if t is str or t is int or t is float:
                found = numbers_and_text.get(v, _MISSING)
            elif t is bool:
                found = flags.get(v, _MISSING)
            else:
                found = _MISSING
            if found is not _MISSING:
                if t is str and not v.isascii():
                    _check_text(name, i, v)
                values[i] = found
                continue
            if _admitted_missing(name, i, v, missing_ok):
                values[i] = None
                continue
            raise _bad(name, i, f"expected a known category, got {_show(v)}; allowed: {shown}")
        return values

    return check


_MISSING = object()


def _datetime_check(name: str, dtype: str, missing_ok: bool) -> _Check:
    aware = "," in dtype
    years = _YEARS
    what = f"an ISO 8601 datetime ({dtype}) such as " + (
        "'2024-05-01T12:30:00+00:00'" if aware else "'2024-05-01T12:30:00'"
    )

    def check(values: list[Any]) -> list[Any]:
        for i, v in enumerate(values):
            if type(v) is str:
                match = _ISO_DATETIME.fullmatch(v)
                if match is None:
                    raise _wrong(name, i, v, what)
                try:
                    parsed = datetime.fromisoformat(v)
                except ValueError:
                    raise _wrong(name, i, v, what) from None
                if (match.group(1) is not None) != aware:
                    why = "without a timezone offset" if aware else "with a timezone offset"
                    raise _bad(name, i, f"expected {dtype}, got {_show(v)} {why}")
                if not years[0] <= parsed.year <= years[1]:
                    raise _bad(
                        name,
                        i,
                        f"{_show(v)} is out of range for {dtype} (years {years[0]} to {years[1]})",
                    )
                continue
            if _admitted_missing(name, i, v, missing_ok):
                values[i] = None
                continue
            raise _wrong(name, i, v, what)
        return values

    return check


def _column_check(spec: ColumnSpec) -> _Check:
    dtype, name = spec.dtype, spec.name
    if is_float(dtype):
        return _float_check(name, dtype, spec.missing_allowed)
    if dtype.lower() in _INT_RANGES:
        return _int_check(name, dtype, *_int_bounds(spec))
    if dtype in ("bool", "boolean"):
        return _type_check(name, dtype, bool, "a boolean", spec.missing_allowed and dtype != "bool")
    if dtype == "category" or (dtype == "string" and spec.refuses_unseen):
        return _category_check(name, spec.categories or (), spec.missing_allowed)
    if dtype == "string":  # any string; with categories, unseen ones are counted by the server
        return _type_check(name, dtype, str, "a string", spec.missing_allowed)
    return _datetime_check(name, dtype, spec.missing_allowed)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What decoding needs from one signature, computed once."""

    signature: Signature
    names: tuple[str, ...]
    name_set: frozenset[str]
    checks: tuple[tuple[str, _Check], ...]
    # Single-row fast path: (name, type, lo, hi, check); a value of exactly that type within
    # [lo, hi] is valid as it is, anything else (NaN fails both bounds) goes through check.
    quick: tuple[tuple[str, type, Any, Any, _Check], ...]
    # The V2 datatype of each column's tensor: exactly the one the model metadata advertises,
    # as the protocol requires (an INT32 tensor does not feed an INT64 input).
    v2_datatypes: dict[str, str]
    outputs: tuple[str, ...]
    texts: tuple[str, ...]  # the columns of free text, whose length is capped
    # (name, categories) of the string columns that accept unseen values, for unseen_counts
    open_categories: tuple[tuple[str, frozenset[str]], ...] = ()


class _Never:
    """A type no JSON value has: columns without a fast path."""


def _quick_bounds(spec: ColumnSpec) -> tuple[type, Any, Any]:
    dtype = spec.dtype
    if is_float(dtype):
        limit = _F32_MAX if dtype.lower() == "float32" else sys.float_info.max
        return float, -limit, limit
    if dtype.lower() in _INT_RANGES:
        return int, *_int_bounds(spec)[:2]
    if dtype in ("bool", "boolean"):
        return bool, False, True
    return _Never, None, None


# Plans by id(signature); the entry holds the signature, so the id cannot be reused while the
# entry lives. Signatures are immutable, so a plan never goes stale; a race builds one twice.
_PLANS: dict[int, _Plan] = {}
_MAX_PLANS = 256


def _plan(signature: Signature) -> _Plan:
    plan = _PLANS.get(id(signature))
    if plan is not None and plan.signature is signature:
        return plan
    names = tuple(spec.name for spec in signature.inputs)
    checks = tuple((spec.name, _column_check(spec)) for spec in signature.inputs)
    pairs = zip(checks, signature.inputs, strict=True)
    plan = _Plan(
        signature=signature,
        names=names,
        name_set=frozenset(names),
        checks=checks,
        quick=tuple((name, *_quick_bounds(spec), check) for (name, check), spec in pairs),
        v2_datatypes={spec.name: input_datatype(spec) for spec in signature.inputs},
        outputs=tuple(output_names(signature)),
        texts=tuple(spec.name for spec in signature.inputs if spec.dtype == "string"),
        open_categories=tuple(
            (spec.name, frozenset(spec.categories))
            for spec in signature.inputs
            if spec.categories is not None and not spec.refuses_unseen
        ),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(signature)] = plan
    return plan


def unseen_counts(columns: dict[str, list[Any]], signature: Signature) -> dict[str, int]:
    """How many values of each column that accepts unseen categories are outside its
    categories, for columns decoded by this module (columns without any are left out)."""
    counts: dict[str, int] = {}
    for name, known in _plan(signature).open_categories:
        n = sum(1 for v in columns[name] if v is not None and v not in known)
        if n:
            counts[name] = n
    return counts


# -- request fields ---------------------------------------------------------------------------


def _text_field(value: Any, field: str) -> str | None:
    """An id or key: a string (an integer is taken as its digits), at most MAX_ID_LENGTH long."""
    if value is None:
        return None
    if type(value) is int:
        value = str(value)
    if type(value) is not str:
        raise BadRequest(f'"{field}" must be a string, got {_show(value)}')
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise BadRequest(f'"{field}" must be printable text of at most {MAX_ID_LENGTH} characters')
    return value


def _check_rows(n: int, max_rows: int, where: str) -> None:
    if n > max_rows:
        raise PayloadTooLarge(f"{where} has {n} rows; at most {max_rows} are allowed per request")
    if n == 0:
        raise BadRequest(f"{where} has no rows")


def _names_mismatch(given: list[Any], plan: _Plan, where: str, noun: str) -> SchemaMismatch:
    counts = Counter(given)
    missing = [n for n in plan.names if n not in counts]
    extra = [str(n) for n in counts if n not in plan.name_set]
    dupes = sorted(str(n) for n, k in counts.items() if k > 1)
    parts = []
    if missing:
        parts.append(f"missing {noun} {missing}")
    if extra:
        parts.append(f"unexpected {noun} {extra}")
    if dupes:
        parts.append(f"duplicate {noun} {dupes}")
    first: str | None = (missing or extra or dupes or [None])[0]  # type: ignore[list-item]
    return SchemaMismatch(
        f"{where} does not match the model signature: {'; '.join(parts)}; the model takes "
        f"{_names_list(plan.names)}",
        column=first,
    )


def _names_list(names: tuple[str, ...]) -> str:
    shown = list(names[:40])
    return repr(shown)[:-1] + (", ...]" if len(names) > 40 else "]")


# -- v1: records or columns -------------------------------------------------------------------


def _check_lengths(columns: dict[str, list[Any]], plan: _Plan, limit: int) -> None:
    """``SchemaMismatch`` naming the column and row of a text value over ``limit`` characters;
    the lengths are compared in C, rows are looked for only when one is too long."""
    for name in plan.texts:
        values = columns[name]
        if max(map(len, filter(None, values)), default=0) > limit:
            row = next(i for i, v in enumerate(values) if v is not None and len(v) > limit)
            raise _bad(
                name,
                row,
                f"a string of {len(values[row])} characters; the limit is {limit} "
                "(modelloop serve --max-string-length)",
            )


def decode_records(
    payload: Any,
    signature: Signature,
    *,
    max_rows: int,
    max_string_length: int = MAX_STRING_LENGTH,
) -> Decoded:
    """Decode ``{"records": [{col: v}, ...]}`` or ``{"columns": {col: [v, ...]}}``.

    Optional ``"id"`` (or ``"request_id"``) and ``"key"`` (the sticky routing key). Raises
    ``BadRequest`` for another shape, ``PayloadTooLarge`` for more than ``max_rows`` rows and
    ``SchemaMismatch`` naming the column and row for anything the signature does not admit, or
    a string longer than ``max_string_length``.
    """
    if type(payload) is not dict:
        raise BadRequest(
            'expected a JSON object with "records" (a list of objects) or "columns" (an object '
            f"of lists), got {_json_type(payload)}"
        )
    if not payload.keys() <= _RECORD_KEYS:
        unknown = sorted(str(k) for k in payload.keys() - _RECORD_KEYS)
        raise BadRequest(f"unknown fields {unknown}; expected {sorted(_RECORD_KEYS)}")
    request_id = _text_field(payload.get("request_id"), "request_id")
    other_id = _text_field(payload.get("id"), "id")
    if request_id is not None and other_id is not None and request_id != other_id:
        raise BadRequest('"id" and "request_id" differ; give one of them')
    request_id = request_id if request_id is not None else other_id
    key = _text_field(payload.get("key"), "key")
    plan = _plan(signature)
    if "records" in payload:
        if "columns" in payload:
            raise BadRequest('give either "records" or "columns", not both')
        columns, n = _from_records(payload["records"], plan, max_rows)
    elif "columns" in payload:
        columns, n = _from_columns(payload["columns"], plan, max_rows)
    else:
        raise BadRequest('expected "records" (a list of objects) or "columns" (an object of lists)')
    if plan.texts:
        _check_lengths(columns, plan, max_string_length)
    return Decoded(columns=columns, n_rows=n, request_id=request_id, key=key, outputs=None)


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null")


def _from_records(records: Any, plan: _Plan, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    if type(records) is not list:
        raise BadRequest(f'"records" must be a list of objects, got {_json_type(records)}')
    n = len(records)
    _check_rows(n, max_rows, '"records"')
    name_set = plan.name_set
    for row, record in enumerate(records):
        if type(record) is not dict:
            raise BadRequest(f"record {row} is {_json_type(record)}, not an object")
        if record.keys() != name_set:
            raise _names_mismatch(list(record), plan, f"record {row}", "columns")
    if n == 1:
        record = records[0]
        columns = {}
        for name, kind, lo, hi, check in plan.quick:
            v = record[name]
            columns[name] = [v] if type(v) is kind and lo <= v <= hi else check([v])
        return columns, 1
    return {name: check([r[name] for r in records]) for name, check in plan.checks}, n


def _from_columns(data: Any, plan: _Plan, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    if type(data) is not dict:
        raise BadRequest(f'"columns" must be an object of lists, got {_json_type(data)}')
    if data.keys() != plan.name_set:
        raise _names_mismatch(list(data), plan, '"columns"', "columns")
    lengths = {}
    for name in plan.names:
        values = data[name]
        if type(values) is not list:
            raise BadRequest(
                f"columns[{name!r}] must be a list of values, got {_json_type(values)}"
            )
        lengths[name] = len(values)
    n = lengths[plan.names[0]] if plan.names else 0
    if any(k != n for k in lengths.values()):
        raise BadRequest(f'"columns" have different lengths: {lengths}')
    _check_rows(n, max_rows, '"columns"')
    return {name: check(list(data[name])) for name, check in plan.checks}, n


# -- V2 (Open Inference Protocol) -------------------------------------------------------------


def decode_v2(
    payload: Any,
    signature: Signature,
    *,
    max_rows: int,
    max_string_length: int = MAX_STRING_LENGTH,
) -> Decoded:
    """Decode an Open Inference Protocol V2 inference request.

    Either one tensor per column (shape ``[n]`` or ``[n, 1]``, data flat or nested), or one
    ``[n, n_columns]`` tensor whose columns follow the signature order. The datatype must be
    the column's own, as the model metadata gives it (the protocol's rule: INT32 does not feed
    an INT64 input, nor FP32 an FP64 one). Raises
    ``BadRequest`` for a malformed request or an unknown requested output, ``PayloadTooLarge``
    for more than ``max_rows`` rows, ``SchemaMismatch`` for missing, unknown or duplicate
    tensors and for values the signature does not admit (strings longer than
    ``max_string_length`` too).
    """
    if type(payload) is not dict:
        raise BadRequest(f'expected a JSON object with "inputs", got {_json_type(payload)}')
    request_id = payload.get("id")
    if request_id is not None and type(request_id) is not str:
        raise BadRequest(f'"id" must be a string, got {_show(request_id)}')
    request_id = _text_field(request_id, "id")
    parameters = payload.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        raise BadRequest(f'"parameters" must be an object, got {_json_type(parameters)}')
    key = _text_field((parameters or {}).get("key"), "parameters.key")
    plan = _plan(signature)
    binary = _flag((parameters or {}).get("binary_data_output"), "parameters.binary_data_output")
    outputs, binary_outputs = _requested_outputs(payload.get("outputs"), plan, binary)
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        raise BadRequest('"inputs" must be a non-empty list of tensors')
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    if len(tensors) == 1 and tensors[0][0] not in plan.name_set and len(tensors[0][1]) == 2:
        columns, n = _from_matrix(tensors[0], plan, max_rows)
    else:
        columns, n = _from_tensors(tensors, plan, max_rows)
    if plan.texts:
        _check_lengths(columns, plan, max_string_length)
    return Decoded(
        columns=columns,
        n_rows=n,
        request_id=request_id,
        key=key,
        outputs=outputs,
        binary_outputs=binary_outputs,
    )


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return False
    if type(value) is not bool:
        raise BadRequest(f'"{field}" must be true or false, got {_show(value)}')
    return value


def _requested_outputs(
    value: Any, plan: _Plan, binary: bool
) -> tuple[list[str] | None, frozenset[str]]:
    """The requested output names (None = all) and those to answer as binary tensor data:
    an output's ``parameters.binary_data`` when given, else the request's
    ``parameters.binary_data_output`` (``binary``)."""
    if value is None:
        return None, frozenset(plan.outputs) if binary else frozenset()
    if type(value) is not list:
        raise BadRequest(f'"outputs" must be a list of objects, got {_json_type(value)}')
    names: list[str] = []
    binary_names: set[str] = set()
    for i, item in enumerate(value):
        name = item.get("name") if type(item) is dict else None
        if type(name) is not str:
            raise BadRequest(f'outputs[{i}] must be an object with a string "name"')
        if name not in plan.outputs:
            raise BadRequest(f"unknown output {name!r}; this model gives {list(plan.outputs)}")
        params = item.get("parameters")
        if params is not None and type(params) is not dict:
            raise BadRequest(f"outputs[{i}].parameters must be an object, got {_show(params)}")
        wanted = (params or {}).get("binary_data")
        if wanted is None:
            wanted = binary
        if _flag(wanted, f"outputs[{i}].parameters.binary_data"):
            binary_names.add(name)
        if name not in names:
            names.append(name)
    return names, frozenset(binary_names)


def _tensor(t: Any, index: int) -> tuple[str, list[int], str, list[Any]]:
    """(name, shape, datatype, data) of one request input, checked for form only."""
    if type(t) is not dict:
        raise BadRequest(f"inputs[{index}] must be an object, got {_json_type(t)}")
    name = t.get("name")
    if type(name) is not str:
        raise BadRequest(f'inputs[{index}] needs a string "name"')
    params = t.get("parameters")
    if params is not None and type(params) is dict and "binary_data_size" in params:
        raise BadRequest(
            f"input {_show(name)}: binary_data_size is given but the request has no "
            "Inference-Header-Content-Length header; send it with the length of the JSON part"
        )
    shape = t.get("shape")
    if type(shape) is not list or not shape:
        raise BadRequest(f'input {_show(name)}: "shape" must be a non-empty list of integers')
    for d in shape:
        if type(d) is not int or d < 0:
            raise BadRequest(
                f'input {_show(name)}: "shape" must hold non-negative integers, got {_show(shape)}'
            )
    datatype = t.get("datatype")
    if datatype not in _V2_DATATYPES:
        raise BadRequest(
            f"input {_show(name)}: unknown datatype {_show(datatype)}; expected one of "
            f"{sorted(_V2_DATATYPES)}"
        )
    data = t.get("data")
    if type(data) is not list:
        raise BadRequest(f'input {_show(name)}: "data" must be a list of values')
    return name, shape, datatype, data


def _flatten(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """The tensor's values in row-major order; ``data`` is flat or nested to ``shape``."""
    if not data or type(data[0]) is not list:
        size = 1
        for d in shape:
            size *= d
        if len(data) != size:
            raise BadRequest(
                f"input {_show(name)}: shape {shape} holds {size} values but data has {len(data)}"
            )
        return data
    flat: list[Any] = []
    _flatten_into(data, shape, 0, flat, name)
    return flat


def _flatten_into(data: Any, shape: list[int], depth: int, out: list[Any], name: str) -> None:
    if depth == len(shape) or type(data) is not list or len(data) != shape[depth]:
        raise BadRequest(f"input {_show(name)}: nested data does not match shape {shape}")
    if depth == len(shape) - 1:
        for item in data:
            if type(item) is list:
                raise BadRequest(f"input {_show(name)}: nested data does not match shape {shape}")
        out.extend(data)
        return
    for item in data:
        _flatten_into(item, shape, depth + 1, out, name)


def _typed(values: list[Any], datatype: str, column: str) -> None:
    """Integer tensors hold JSON integers within the datatype's range (missing passes on)."""
    lo, hi = _V2_INTS[datatype]
    for i, v in enumerate(values):
        if (type(v) is int and lo <= v <= hi) or v is None:
            continue
        if type(v) is int:
            raise _bad(column, i, f"{v} is out of range for the {datatype} tensor")
        raise _wrong(column, i, v, f"an integer (the tensor's datatype is {datatype})")


def _fits(plan: _Plan, column: str, datatype: str, tensor: str) -> None:
    expected = plan.v2_datatypes[column]
    if datatype != expected:
        raise SchemaMismatch(
            f"input {_show(tensor)}: datatype {datatype} does not match column {column!r}, "
            f"which takes {expected} (see the model metadata); convert the tensor to {expected}",
            column=column,
        )


def _from_tensors(
    tensors: list[tuple[str, list[int], str, list[Any]]], plan: _Plan, max_rows: int
) -> tuple[dict[str, list[Any]], int]:
    by_name = {t[0]: t for t in tensors}
    if len(by_name) != len(tensors) or by_name.keys() != plan.name_set:
        raise _names_mismatch([t[0] for t in tensors], plan, "inputs", "tensors")
    n = tensors[0][1][0]
    for name, shape, _, _ in tensors:
        if shape[0] != n or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            largest = max(tensors, key=lambda t: t[1][0])
            _check_rows(largest[1][0], max_rows, f"input {largest[0]!r}")
            if shape[0] != n:
                rows = {t[0]: t[1][0] for t in tensors}
                raise BadRequest(f"inputs have different numbers of rows: {rows}")
            raise BadRequest(
                f"input {name!r}: shape {shape} does not fit one column; expected [n] or [n, 1]"
            )
    _check_rows(n, max_rows, "inputs")
    columns: dict[str, list[Any]] = {}
    datatypes = plan.v2_datatypes
    for name, kind, lo, hi, check in plan.quick:
        _, shape, datatype, data = by_name[name]
        if datatype != datatypes[name]:
            _fits(plan, name, datatype, name)
        if n == 1 and len(data) == 1:  # the column's own datatype, checked above
            v = data[0]
            if type(v) is kind and lo <= v <= hi:
                columns[name] = [v]
                continue
        values = _flatten(data, shape, name)
        if datatype in _V2_INTS:
            _typed(values, datatype, name)
        columns[name] = check(values)
    return columns, n


def _from_matrix(
    tensor: tuple[str, list[int], str, list[Any]], plan: _Plan, max_rows: int
) -> tuple[dict[str, list[Any]], int]:
    name, shape, datatype, data = tensor
    where = f"input {name!r}"
    k = len(plan.names)
    if shape[1] != k:
        raise SchemaMismatch(
            f"{where} has shape {shape}: a matrix input needs one column per model input, "
            f"[n, {k}] for {_names_list(plan.names)}"
        )
    n = shape[0]
    _check_rows(n, max_rows, where)
    flat = _flatten(data, shape, name)
    for column in plan.names:
        _fits(plan, column, datatype, name)
    columns: dict[str, list[Any]] = {}
    integers = datatype in _V2_INTS
    for j, (column, kind, lo, hi, check) in enumerate(plan.quick):
        if n == 1 and not integers:  # every column's own datatype, checked above
            v = flat[j]
            if type(v) is kind and lo <= v <= hi:
                columns[column] = [v]
                continue
        values = flat[j::k]
        if integers:
            _typed(values, datatype, column)
        columns[column] = check(values)
    return columns, n


# -- one frame per micro-batch ----------------------------------------------------------------


def to_frame(columns: dict[str, list[Any]], signature: Signature) -> pd.DataFrame:
    """The DataFrame ``signature.validate(columns)`` gives, built directly from decoded columns.

    ``columns`` must come from :func:`decode_records` or :func:`decode_v2` for this signature
    (or be such columns concatenated, one micro-batch): they are not checked again. Building
    the frame this way costs a fraction of ``Signature.validate``, whose per-column pandas work
    dominates a small batch.
    """
    import numpy as np
    import pandas as pd

    from modelloop.models._dtypes import _default_string_dtype, cast_column

    specs = signature.inputs
    if specs and all(spec.dtype == "float64" for spec in specs):
        matrix = np.array(
            [[math.nan if v is None else v for v in columns[spec.name]] for spec in specs],
            dtype=np.float64,
        )
        return pd.DataFrame(matrix.T, columns=[spec.name for spec in specs])
    out: dict[str, Any] = {}
    for spec in specs:
        values, dtype = columns[spec.name], spec.dtype
        if dtype in ("float32", "float64"):
            out[spec.name] = np.array([math.nan if v is None else v for v in values], dtype=dtype)
        elif dtype in _INT_RANGES or dtype == "bool":
            out[spec.name] = np.array(values, dtype=dtype)
        elif dtype.lower() in _INT_RANGES or dtype in ("Float32", "Float64", "boolean"):
            out[spec.name] = pd.array(values, dtype=dtype)
        elif dtype == "string":
            text = pd.Series([math.nan if v is None else v for v in values], dtype=object)
            out[spec.name] = text.astype(_default_string_dtype())
        elif dtype == "category":
            out[spec.name] = pd.Categorical(values, categories=list(spec.categories or ()))
        else:  # datetimes: parsing with zones and units is pandas' job
            out[spec.name] = cast_column(
                pd.Series(values), spec.name, dtype, nullable=True, categories=None
            )
    return pd.DataFrame(out)


def float_matrix(columns: dict[str, list[Any]], signature: Signature) -> np.ndarray:
    """Decoded columns of numeric or boolean inputs as one float32 ``[rows, columns]`` matrix,
    missing values as NaN: what ``to_frame(...).to_numpy(np.float32, na_value=nan)`` gives,
    without pandas. Floats go through float64 and integers through their own dtype, so each value
    is rounded to float32 once, as that conversion does."""
    import numpy as np

    specs = signature.inputs
    if all(spec.dtype in ("float32", "float64") for spec in specs):
        rows = [[math.nan if v is None else v for v in columns[spec.name]] for spec in specs]
        return np.array(rows, dtype=np.float64).T.astype(np.float32, order="C")
    n = len(columns[specs[0].name]) if specs else 0
    out = np.empty((n, len(specs)), dtype=np.float32)
    for j, spec in enumerate(specs):
        values = columns[spec.name]
        kind = spec.dtype.lower()
        if kind in _INT_RANGES:
            missing = [i for i, v in enumerate(values) if v is None]
            out[:, j] = np.array([0 if v is None else v for v in values], dtype=kind)
            out[missing, j] = np.nan
        else:  # floats and booleans
            out[:, j] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    return out
