"""Request decoding, validation against the signature, and response encoding of the server."""

from __future__ import annotations

import json
import math
import random
import timeit
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelloop.exceptions import SchemaMismatch
from modelloop.models import ColumnSpec, Signature
from modelloop.serving._codec import (
    Decoded,
    decode_records,
    decode_v2,
    float_matrix,
    parse_json,
    to_frame,
)
from modelloop.serving._encode import (
    encode_records,
    encode_v2,
    output_names,
    v2_datatype,
    v2_model_metadata,
)
from modelloop.serving._errors import BadRequest, PayloadTooLarge


def spec(name: str, dtype: str, nullable: bool = False, **kw: Any) -> ColumnSpec:
    return ColumnSpec(name=name, dtype=dtype, nullable=nullable, **kw)


@pytest.fixture
def sig() -> Signature:
    """A classifier's signature with every dtype family."""
    return Signature(
        inputs=(
            spec("x", "float64"),
            spec("x_nan", "float64", allow_nan=True),
            spec("f32", "float32"),
            spec("n", "int64"),
            spec("small", "int8"),
            spec("maybe_n", "Int64", nullable=True),
            spec("flag", "bool"),
            spec("maybe_flag", "boolean", nullable=True),
            spec("name", "string", nullable=True),
            spec("color", "category", categories=("red", "blue")),
            spec("level", "category", categories=(1, 2.5)),
            spec("when", "datetime64[ns]", nullable=True),
            spec("when_utc", "datetime64[ns, UTC]"),
        ),
        classes=(0, 1),
        task="classification",
    )


def good_record(i: int = 0) -> dict[str, Any]:
    return {
        "x": 1.5 + i,
        "x_nan": None if i % 2 else 0.25,
        "f32": 3 + i,
        "n": 7 - i,
        "small": -5,
        "maybe_n": None if i % 3 == 1 else 40 + i,
        "flag": bool(i % 2),
        "maybe_flag": [True, None, False][i % 3],
        "name": [None, "ann", "bob"][i % 3],
        "color": ["red", "blue"][i % 2],
        "level": [1, 2.5, 2.5][i % 3],
        "when": None if i == 2 else f"2021-03-0{i + 1}T05:06:07",
        "when_utc": f"2021-03-04T05:06:0{i}+02:00",
    }


def records_body(records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"records": records, **extra}


def expect(exc: type[Exception], fn: Any, *args: Any, **kwargs: Any) -> Exception:
    """Run ``fn`` and return the error, which must be exactly of class ``exc``."""
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    return info.value


# -- parse_json --------------------------------------------------------------------------------


def test_parse_json_reads_objects_and_names_syntax_errors() -> None:
    assert parse_json(b'{"records": [{"a": 1}]}') == {"records": [{"a": 1}]}
    err = expect(BadRequest, parse_json, b'{"records": [1, 2,]}')
    assert "not valid JSON" in str(err) and "column 19" in str(err)
    assert err.http_status == 400
    for body in (b"", b"\xff\xfe\x00garbage", b'{"a": 1} trailing', b"[" * 100_000):
        assert "not valid JSON" in str(expect(BadRequest, parse_json, body))


def test_nan_and_infinity_tokens_are_values_the_columns_judge() -> None:
    s = Signature(inputs=(spec("a", "float64", allow_nan=True), spec("b", "float64")))
    d = decode_records(parse_json(b'{"records": [{"a": NaN, "b": 1}]}'), s, max_rows=10)
    assert d.columns == {"a": [None], "b": [1.0]}
    err = expect(
        SchemaMismatch,
        decode_records,
        parse_json(b'{"records": [{"a": 1, "b": NaN}]}'),
        s,
        max_rows=10,
    )
    assert err.column == "b" and "column 'b', row 0: missing value not allowed" in str(err)
    for token in (b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"records": [{"a": %s, "b": 1}]}' % token
        err = expect(SchemaMismatch, decode_records, parse_json(body), s, max_rows=10)
        assert err.column == "a" and "finite number" in str(err) and err.http_status == 422


# -- decode_records: the happy paths -----------------------------------------------------------


def test_records_and_columns_decode_to_the_same_normalised_columns(sig: Signature) -> None:
    records = [good_record(i) for i in range(3)]
    by_records = decode_records(records_body(records, id="req-1", key="user-9"), sig, max_rows=3)
    by_columns = decode_records(
        {"columns": {k: [r[k] for r in records] for k in reversed(list(records[0]))}},
        sig,
        max_rows=3,
    )
    assert isinstance(by_records, Decoded)
    assert by_records.n_rows == by_columns.n_rows == 3
    assert by_records.columns == by_columns.columns
    assert list(by_records.columns) == sig.columns  # signature order, whatever the input order
    assert (by_records.request_id, by_records.key, by_records.outputs) == ("req-1", "user-9", None)
    assert (by_columns.request_id, by_columns.key) == (None, None)
    cols = by_records.columns
    assert cols["f32"] == [3.0, 4.0, 5.0] and all(type(v) is float for v in cols["f32"])
    assert cols["x_nan"] == [0.25, None, 0.25]
    assert cols["maybe_n"] == [40, None, 42]


def test_values_are_normalised_for_an_exact_merged_batch() -> None:
    s = Signature(
        inputs=(
            spec("i", "int64"),
            spec("u", "uint64"),
            spec("f", "float64", allow_nan=True),
            spec("c", "category", categories=(2.0, "z")),
            spec("s", "string", nullable=True),
        )
    )
    d = decode_records(
        records_body([{"i": 3.0, "u": 1e19, "f": 2, "c": 2, "s": math.nan}]), s, max_rows=1
    )
    assert d.columns == {"i": [3], "u": [10**19], "f": [2.0], "c": [2.0], "s": [None]}
    assert type(d.columns["i"][0]) is int and type(d.columns["c"][0]) is float
    # two requests merged: integers past 2**53 stay exact next to a float-typed integer
    a = decode_records(
        records_body([{"i": 2**62 + 1, "u": 1, "f": 1, "c": "z", "s": "q"}]), s, max_rows=1
    )
    b = decode_records(
        records_body([{"i": 5.0, "u": 2, "f": 1, "c": "z", "s": "q"}]), s, max_rows=1
    )
    merged = {k: a.columns[k] + b.columns[k] for k in s.columns}
    assert s.validate(merged)["i"].tolist() == [2**62 + 1, 5]


def test_request_id_may_come_as_id_or_request_id() -> None:
    s = Signature(inputs=(spec("a", "int64"),))
    rows = [{"a": 1}]
    assert decode_records({"records": rows, "request_id": "r"}, s, max_rows=1).request_id == "r"
    assert decode_records({"records": rows, "id": 12}, s, max_rows=1).request_id == "12"
    same = {"records": rows, "id": "r", "request_id": "r"}
    assert decode_records(same, s, max_rows=1).request_id == "r"
    err = expect(BadRequest, decode_records, {**same, "id": "other"}, s, max_rows=1)
    assert "differ" in str(err)


# -- decode_records: every kind of bad request -------------------------------------------------

BAD_SHAPES = [
    ([{"a": 1}], "expected a JSON object"),
    ({"rows": [{"a": 1}]}, "unknown fields ['rows']"),
    ({}, 'expected "records"'),
    ({"records": [{"a": 1}], "columns": {"a": [1]}}, "not both"),
    ({"records": {"a": 1}}, '"records" must be a list of objects'),
    ({"records": []}, '"records" has no rows'),
    ({"records": [{"a": 1}, [1]]}, "record 1 is an array, not an object"),
    ({"columns": [1]}, '"columns" must be an object of lists'),
    ({"columns": {"a": 1}}, "columns['a'] must be a list of values"),
    ({"columns": {"a": []}}, '"columns" has no rows'),
    ({"records": [{"a": 1}], "id": [1]}, '"id" must be a string'),
    ({"records": [{"a": 1}], "key": "k" * 300}, '"key" must be printable text'),
    ({"records": [{"a": 1}], "request_id": "a\nb"}, '"request_id" must be printable'),
]


@pytest.mark.parametrize(("payload", "message"), BAD_SHAPES)
def test_malformed_requests_are_bad_requests(payload: Any, message: str) -> None:
    s = Signature(inputs=(spec("a", "int64"),))
    err = expect(BadRequest, decode_records, payload, s, max_rows=5)
    assert message in str(err) and err.http_status == 400


def test_columns_of_different_lengths_are_a_bad_request() -> None:
    s = Signature(inputs=(spec("a", "int64"), spec("b", "int64")))
    err = expect(BadRequest, decode_records, {"columns": {"a": [1, 2], "b": [1]}}, s, max_rows=5)
    assert "different lengths" in str(err) and "'a': 2" in str(err)


def test_too_many_rows_is_payload_too_large_in_both_forms() -> None:
    s = Signature(inputs=(spec("a", "int64"),))
    err = expect(PayloadTooLarge, decode_records, {"records": [{"a": 1}] * 6}, s, max_rows=5)
    assert "6 rows" in str(err) and "at most 5" in str(err) and err.http_status == 413
    expect(PayloadTooLarge, decode_records, {"columns": {"a": [1] * 6}}, s, max_rows=5)
    assert decode_records({"records": [{"a": 1}] * 5}, s, max_rows=5).n_rows == 5


def test_missing_extra_and_misspelt_columns_are_named(sig: Signature) -> None:
    record = good_record()
    del record["small"]
    record["smal"] = 1
    err = expect(
        SchemaMismatch, decode_records, records_body([good_record(), record]), sig, max_rows=5
    )
    assert "record 1" in str(err) and "missing columns ['small']" in str(err)
    assert "unexpected columns ['smal']" in str(err) and err.column == "small"
    cols = {k: [v] for k, v in good_record().items()}
    cols["extra"] = [1]
    err = expect(SchemaMismatch, decode_records, {"columns": cols}, sig, max_rows=5)
    assert "unexpected columns ['extra']" in str(err) and err.column == "extra"


BAD_VALUES = [
    ("x", "abc", "expected a number (float64), got 'abc'"),
    ("x", True, "expected a number (float64), got True"),
    ("x", [1.0], "expected a number (float64), got [1.0]"),
    ("x", None, "missing value not allowed"),
    ("x", math.inf, "expected a finite number"),
    ("x", 10**400, "out of range for float64"),
    ("f32", 3.5e38, "out of range for float32"),
    ("n", 2.5, "with a fraction"),
    ("n", "7", "expected an integer (int64), got '7'"),
    ("n", False, "expected an integer (int64), got False"),
    ("n", 2**63, "out of range for int64"),
    ("n", 9.3e18, "out of range for int64"),
    ("small", 128, "out of range for int8 (-128 to 127)"),
    ("small", -129.0, "out of range for int8"),
    ("maybe_n", -math.inf, "expected a finite number (Int64)"),
    ("maybe_n", 2**53 + 1, "out of range for Int64 (-9007199254740992 to 9007199254740992, as it"),
    ("flag", 1, "expected a boolean (bool), got 1"),
    ("flag", None, "missing value not allowed"),
    ("maybe_flag", "true", "expected a boolean (boolean), got 'true'"),
    ("name", 5, "expected a string (string), got 5"),
    ("name", "\ud800", "not valid Unicode text"),
    ("color", "green", "expected a known category, got 'green'; allowed: ['red', 'blue']"),
    ("color", None, "missing value not allowed"),
    ("level", True, "expected a known category, got True"),
    ("level", "1", "expected a known category, got '1'"),
    ("when", "yesterday", "expected an ISO 8601 datetime (datetime64[ns])"),
    ("when", "2021-02-30", "expected an ISO 8601 datetime"),
    ("when", 1_600_000_000, "expected an ISO 8601 datetime"),
    ("when", "2021-03-04T05:06:07Z", "with a timezone offset"),
    ("when", "2300-01-01", "out of range for datetime64[ns] (years 1678 to 2261)"),
    ("when_utc", "2021-03-04T05:06:07", "without a timezone offset"),
]


# Where the decoder is stricter on purpose: the signature takes True for the category 1, and an
# integer past 2**53 in an Int64 column that admits missing values (exact alone, but not once a
# batch with a None goes through float64).
LAXER_SIGNATURE = [("level", True), ("maybe_n", 2**53 + 1)]


@pytest.mark.parametrize(
    ("column", "value", "message"), BAD_VALUES, ids=[f"{c}-{m[:30]}" for c, _, m in BAD_VALUES]
)
def test_bad_values_name_the_column_and_row(
    sig: Signature, column: str, value: Any, message: str
) -> None:
    bad = good_record(1)
    bad[column] = value
    payload = records_body([good_record(0), good_record(2), bad])
    err = expect(SchemaMismatch, decode_records, payload, sig, max_rows=5)
    assert str(err).startswith(f"column {column!r}, row 2: "), str(err)
    assert message in str(err) and err.column == column and err.http_status == 422
    # The signature itself refuses the same input: the decoder is never laxer. (Signature.validate
    # lets OverflowError out for an integer past float range and UnicodeEncodeError for a lone
    # surrogate; the decoder answers both with SchemaMismatch.)
    if any(column == c and type(value) is type(v) and value == v for c, v in LAXER_SIGNATURE):
        sig.validate(payload["records"])
        return
    with pytest.raises((SchemaMismatch, OverflowError, UnicodeEncodeError)):
        sig.validate(payload["records"])


def test_numpy_integer_columns_refuse_missing_values_even_when_nullable() -> None:
    s = Signature(inputs=(spec("n", "int32", nullable=True), spec("b", "bool", nullable=True)))
    for column in ("n", "b"):
        record = {"n": 1, "b": True, column: None}
        err = expect(SchemaMismatch, decode_records, records_body([record]), s, max_rows=1)
        assert err.column == column
        with pytest.raises(SchemaMismatch):
            s.validate([record])


def test_long_values_are_shortened_in_messages() -> None:
    s = Signature(inputs=(spec("a", "int64"),))
    err = expect(SchemaMismatch, decode_records, records_body([{"a": "z" * 10_000}]), s, max_rows=1)
    assert len(str(err)) < 200 and "..." in str(err)


# -- agreement with Signature.validate ---------------------------------------------------------


def test_decoded_columns_give_the_frame_records_give(sig: Signature) -> None:
    records = [good_record(i) for i in range(3)]
    decoded = decode_records(records_body(json.loads(json.dumps(records))), sig, max_rows=3)
    got, want = sig.validate(decoded.columns), sig.validate(records)
    pd.testing.assert_frame_equal(got, want)
    assert str(got["when_utc"].dtype) == "datetime64[ns, UTC]"
    assert got["maybe_n"].isna().tolist() == [False, True, False]
    # and one row at a time, merged the way the batcher merges requests
    singles = [decode_records(records_body([r]), sig, max_rows=1) for r in records]
    merged = {name: [v for d in singles for v in d.columns[name]] for name in sig.columns}
    pd.testing.assert_frame_equal(sig.validate(merged), want)
    # to_frame builds the same frame without validating again
    pd.testing.assert_frame_equal(to_frame(merged, sig), want)
    pd.testing.assert_frame_equal(to_frame(singles[1].columns, sig), sig.validate(records[1:2]))
    floats = Signature(inputs=(spec("a", "float64", allow_nan=True), spec("b", "float64")))
    d = decode_records({"columns": {"a": [1, None], "b": [0.5, 2]}}, floats, max_rows=2)
    pd.testing.assert_frame_equal(to_frame(d.columns, floats), floats.validate(d.columns))


def test_float_matrix_is_the_frame_as_float32() -> None:
    """The ONNX tensor input built without pandas equals the frame's float32 form, missing values
    as NaN, each value rounded to float32 once (integers beyond 2**53 included)."""
    numeric = Signature(
        inputs=(
            spec("x", "float64", allow_nan=True),
            spec("f32", "float32"),
            spec("n", "int64"),
            spec("u", "uint8"),
            spec("maybe_n", "Int64", nullable=True),
            spec("flag", "bool"),
            spec("maybe_flag", "boolean", nullable=True),
        )
    )
    body = {
        "columns": {
            "x": [0.1, None, 3.3],
            "f32": [1 / 3, 2.5, -7.0],
            "n": [2**53 + 1, -(2**62) - 1, 7],
            "u": [0, 255, 9],
            "maybe_n": [None, 2**53 - 1, -4],
            "flag": [True, False, True],
            "maybe_flag": [None, True, False],
        }
    }
    d = decode_records(body, numeric, max_rows=3)
    want = to_frame(d.columns, numeric).to_numpy(dtype=np.float32, na_value=np.nan)
    got = float_matrix(d.columns, numeric)
    assert got.dtype == np.float32 and got.shape == (3, 7)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[1, 0]) and np.isnan(got[0, 4]) and np.isnan(got[0, 6])
    floats = Signature(inputs=(spec("a", "float64", allow_nan=True), spec("b", "float32")))
    d = decode_records({"columns": {"a": [1, None], "b": [0.1, 2]}}, floats, max_rows=2)
    np.testing.assert_array_equal(
        float_matrix(d.columns, floats),
        to_frame(d.columns, floats).to_numpy(dtype=np.float32, na_value=np.nan),
    )


DTYPES = [
    *("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
    *("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"),
    *("float32", "float64", "Float32", "Float64", "bool", "boolean", "string"),
    *("datetime64[ns]", "datetime64[s]", "datetime64[ns, UTC]", "datetime64[us, Europe/Paris]"),
]
CATEGORIES = [("a", "b", 1, 2.5), (True, False), (0, 1, 2)]
EDGE_VALUES: list[Any] = [
    None,
    math.nan,
    math.inf,
    -math.inf,
    0,
    1,
    -1,
    2,
    127,
    128,
    -128,
    -129,
    255,
    256,
    32767,
    32768,
    -32769,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**400,
    0.0,
    -0.0,
    1.0,
    1.5,
    -2.5,
    3.0,
    2.5,
    1e19,
    9.3e18,
    2.0**63,
    3.4e38,
    3.5e38,
    1e308,
    5e-324,
    True,
    False,
    "",
    "a",
    "b",
    "abc",
    "1",
    "1.5",
    "NaN",
    "true",
    "é",
    "\ud800",
    "now",
    "20240101",
    "2024-01-01",
    "2024-01-01T10:00:00",
    "2024-01-01 10:00:00.123456789",
    "2024-01-01T10:00Z",
    "2024-01-01T10:00:00+05:30",
    "2024-02-30",
    "2024-01-01T24:00:00",
    "1677-09-22",
    "1678-01-01T00:00:00-05:00",
    "2261-12-31T23:59:59+00:00",
    "2262-04-12",
    "0001-01-01",
    "0002-01-01T00:00:00+01:00",
    "9998-12-31T23:00:00-01:00",
    "9999-12-31",
    [],
    {},
    [1],
]


def all_specs() -> list[ColumnSpec]:
    out = []
    for dtype in DTYPES:
        for nullable in (False, True):
            out.append(spec("c", dtype, nullable))
        if "loat" in dtype:
            out.append(spec("c", dtype, allow_nan=True))
    for cats in CATEGORIES:
        for nullable in (False, True):
            out.append(spec("c", "category", nullable, categories=cats))
    return out


def test_whatever_the_decoder_accepts_the_signature_accepts_identically() -> None:
    accepted: dict[int, list[Any]] = {}
    for k, column in enumerate(all_specs()):
        s = Signature(inputs=(column,))
        accepted[k] = []
        for value in EDGE_VALUES:
            records = [{"c": value}]
            try:
                decoded = decode_records(records_body(records), s, max_rows=1)
            except SchemaMismatch as e:
                assert e.column == "c" and str(e).startswith("column 'c', row 0: "), str(e)
                continue
            where = f"{column.dtype} nullable={column.nullable} value={value!r}"
            try:
                got = s.validate(decoded.columns)
                want = s.validate(records)
            except Exception as e:  # pragma: no cover - the failure report
                pytest.fail(f"decoder accepted but validate refused: {where}: {e}")
            pd.testing.assert_frame_equal(got, want, obj=where)
            pd.testing.assert_frame_equal(to_frame(decoded.columns, s), got, obj=where)
            accepted[k].append(value)
        assert accepted[k], f"nothing accepted for {column}"
    # mixtures of accepted values, decoded one request at a time and merged as one batch
    rng = random.Random(0)
    for k, column in enumerate(all_specs()):
        s = Signature(inputs=(column,))
        for _ in range(8):
            values = rng.choices(accepted[k], k=3)
            singles = [decode_records({"records": [{"c": v}]}, s, max_rows=1) for v in values]
            merged = {"c": [d.columns["c"][0] for d in singles]}
            whole = decode_records({"columns": {"c": list(values)}}, s, max_rows=3)
            assert whole.columns == merged
            got = s.validate(merged)
            pd.testing.assert_frame_equal(to_frame(merged, s), got, obj=f"{column} {values!r}")
            if (
                "int" in column.dtype.lower()
                and any(type(v) is float for v in values)
                and any(type(v) is int and abs(v) > 2**53 for v in values)
            ):
                # raw records go through float64 and lose the big integer; decoded ones do not
                assert got["c"].tolist() == merged["c"]
                continue
            want = s.validate([{"c": v} for v in values])
            pd.testing.assert_frame_equal(got, want, obj=f"{column.dtype} {values!r}")


# -- decode_v2 ---------------------------------------------------------------------------------


@pytest.fixture
def numeric() -> Signature:
    return Signature(
        inputs=(spec("a", "float64"), spec("b", "int32"), spec("c", "float32")),
        classes=("no", "yes"),
        task="classification",
    )


def tensor(name: str, shape: list[int], datatype: str, data: list[Any], **kw: Any) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **kw}


def test_v2_one_tensor_per_column_flat_or_nested(numeric: Signature) -> None:
    payload = {
        "id": "42",
        "parameters": {"key": "user-1"},
        "inputs": [
            tensor("c", [2, 1], "FP32", [[0.5], [1.5]]),
            tensor("a", [2], "FP64", [1, 2]),
            tensor("b", [2, 1], "INT32", [3, 4]),
        ],
        "outputs": [{"name": "predict_proba", "parameters": {"binary_data": False}}],
    }
    d = decode_v2(payload, numeric, max_rows=2)
    assert d.columns == {"a": [1.0, 2.0], "b": [3, 4], "c": [0.5, 1.5]}
    assert (d.n_rows, d.request_id, d.key, d.outputs) == (2, "42", "user-1", ["predict_proba"])
    assert d.binary_outputs == frozenset()


def test_v2_matrix_input_maps_onto_columns_in_signature_order(numeric: Signature) -> None:
    ints = Signature(inputs=(spec("a", "int64"), spec("b", "int64"), spec("c", "int64")))
    flat = decode_v2(
        {"inputs": [tensor("x", [2, 3], "INT64", [1, 2, 3, 4, 5, 6])]}, ints, max_rows=2
    )
    assert flat.columns == {"a": [1, 4], "b": [2, 5], "c": [3, 6]}
    floats = Signature(inputs=(spec("a", "float64"), spec("b", "float64")))
    nested = decode_v2(
        {"inputs": [tensor("x", [2, 2], "FP64", [[1, 2.5], [4, 5.5]])]}, floats, max_rows=2
    )
    assert nested.columns == {"a": [1.0, 4.0], "b": [2.5, 5.5]}
    err = expect(
        SchemaMismatch,
        decode_v2,
        {"inputs": [tensor("x", [1, 2], "FP64", [1, math.inf])]},
        floats,
        max_rows=2,
    )
    assert str(err).startswith("column 'b', row 0: ") and "finite" in str(err)
    err = expect(
        SchemaMismatch,
        decode_v2,
        {"inputs": [tensor("x", [1, 3], "FP64", [1, 2, 3])]},
        numeric,
        max_rows=2,
    )
    assert err.column == "b" and "datatype FP64 does not match column 'b'" in str(err)
    err = expect(
        SchemaMismatch,
        decode_v2,
        {"inputs": [tensor("x", [1, 2], "INT64", [1, 2])]},
        numeric,
        max_rows=2,
    )
    assert "[n, 3]" in str(err) and "'a', 'b', 'c'" in str(err)
    mixed = Signature(inputs=(spec("a", "float64"), spec("s", "string")))
    err = expect(
        SchemaMismatch,
        decode_v2,
        {"inputs": [tensor("x", [1, 2], "FP64", [1, 2])]},
        mixed,
        max_rows=2,
    )
    assert err.column == "s" and "does not match column 's', which takes BYTES" in str(err)


def test_v2_requests_built_by_tritonclient_decode(sig: Signature) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import np_to_triton_dtype

    records = [good_record(0), good_record(2)]
    numpy_types = {  # the columns without missing values in these two rows
        "x": np.float64,
        "x_nan": np.float64,
        "f32": np.float32,
        "n": np.int64,
        "small": np.int8,
        "maybe_n": np.int64,
        "flag": np.bool_,
        "maybe_flag": np.bool_,
        "color": np.object_,
        "level": np.float64,
        "when_utc": np.object_,
    }
    inputs = []
    for name, numpy_type in numpy_types.items():
        array = np.array([[r[name]] for r in records], dtype=numpy_type)
        t = httpclient.InferInput(name, [2, 1], np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array, binary_data=False)
        inputs.append(t)
    out = httpclient.InferRequestedOutput("predict", binary_data=False)
    body, _ = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=[out], request_id="tc-1", parameters={"key": "k"}
    )
    payload = parse_json(body)
    payload["inputs"] += [  # a numpy tensor has no missing value: JSON null where one is allowed
        tensor("name", [2], "BYTES", [None, "bob"]),
        tensor("when", [2], "BYTES", ["2021-03-01T05:06:07", None]),
    ]
    d = decode_v2(payload, sig, max_rows=2)
    assert (d.request_id, d.key, d.outputs, d.n_rows) == ("tc-1", "k", ["predict"], 2)
    pd.testing.assert_frame_equal(sig.validate(d.columns), sig.validate(records))


BAD_V2 = [
    ([], BadRequest, "expected a JSON object"),
    ({"inputs": []}, BadRequest, '"inputs" must be a non-empty list'),
    ({"inputs": [1]}, BadRequest, "inputs[0] must be an object"),
    ({"inputs": [{"shape": [1]}]}, BadRequest, 'inputs[0] needs a string "name"'),
    ({"inputs": [tensor("a", 1, "FP64", [1])]}, BadRequest, '"shape" must be a non-empty list'),
    ({"inputs": [tensor("a", [-1], "FP64", [1])]}, BadRequest, "non-negative integers"),
    ({"inputs": [tensor("a", [1], "FLOAT", [1])]}, BadRequest, "unknown datatype 'FLOAT'"),
    ({"inputs": [tensor("a", [1], "FP64", 1.5)]}, BadRequest, '"data" must be a list'),
    ("a: shape [2], data [1]", BadRequest, "holds 2 values but data has 1"),
    ("a: shape [2], data [[1], [2]]", BadRequest, "nested data does not match shape [2]"),
    ("a: shape [2, 1], data [[1], [2, 3]]", BadRequest, "nested data does not match shape"),
    ("a: shape [2, 1], data [[[1]], [2]]", BadRequest, "nested data does not match shape"),
    ("a: shape [2, 2], data [1, 2, 3, 4]", BadRequest, "does not fit one column"),
    (
        {"inputs": [tensor("x", [2, 3], "FP64", [[1, 2, 3], [4, 5]])]},
        BadRequest,
        "nested data does not match shape [2, 3]",
    ),
    (
        {"inputs": [tensor("a", [1], "FP64", [1], parameters={"binary_data_size": 8})]},
        BadRequest,
        "no Inference-Header-Content-Length header",
    ),
    ({"id": 5, "inputs": [1]}, BadRequest, '"id" must be a string'),
    ({"parameters": [], "inputs": [1]}, BadRequest, '"parameters" must be an object'),
    ({"outputs": [{"name": "logits"}], "inputs": [1]}, BadRequest, "unknown output 'logits'"),
    ({"outputs": [{}], "inputs": [1]}, BadRequest, "outputs[0] must be an object with a string"),
    ({"inputs": [tensor("a", [1], "FP64", [1])]}, SchemaMismatch, "missing tensors ['b', 'c']"),
    (
        {"inputs": [tensor(n, [1], "FP64", [1]) for n in ("a", "b", "c", "d")]},
        SchemaMismatch,
        "unexpected tensors ['d']",
    ),
    (
        {"inputs": [tensor(n, [1], "INT32", [1]) for n in ("a", "b", "c", "a")]},
        SchemaMismatch,
        "duplicate tensors ['a']",
    ),
]


@pytest.mark.parametrize(("payload", "exc", "message"), BAD_V2)
def test_v2_malformed_requests(numeric: Signature, payload: Any, exc: type, message: str) -> None:
    if isinstance(payload, str):  # "a: shape [..], data [..]": tensor a of a valid request
        shape, data = (json.loads(part) for part in payload[9:].split(", data "))
        payload = columns_request(shape[0], a={"shape": shape, "data": data})
    err = expect(exc, decode_v2, payload, numeric, max_rows=5)
    assert message in str(err), str(err)


def columns_request(rows: int = 2, **overrides: dict[str, Any]) -> dict[str, Any]:
    """A valid request for ``numeric`` with ``rows`` rows, some tensor fields overridden."""
    inputs = {
        "a": tensor("a", [rows], "FP64", [1.0] * rows),
        "b": tensor("b", [rows], "INT32", [1] * rows),
        "c": tensor("c", [rows], "FP32", [1.0] * rows),
    }
    for name, change in overrides.items():
        inputs[name] = {**inputs[name], **change}
    return {"inputs": list(inputs.values())}


def test_v2_datatypes_must_be_the_columns_own(numeric: Signature) -> None:
    # As the protocol says: the tensor's datatype is the input's, not one that could be cast.
    for column, datatype in (("b", "FP64"), ("b", "INT64"), ("b", "INT8"), ("a", "FP32"),
                             ("a", "INT64"), ("c", "FP64")):  # fmt: skip
        err = expect(
            SchemaMismatch,
            decode_v2,
            columns_request(**{column: {"datatype": datatype}}),
            numeric,
            max_rows=5,
        )
        own = {"a": "FP64", "b": "INT32", "c": "FP32"}[column]
        assert err.column == column, str(err)
        assert f"input '{column}': datatype {datatype} does not match column '{column}', " \
            f"which takes {own}" in str(err)  # fmt: skip
    err = expect(
        SchemaMismatch,
        decode_v2,
        columns_request(a={"datatype": "BYTES", "data": ["1", "2"]}),
        numeric,
        max_rows=5,
    )
    assert err.column == "a" and "BYTES" in str(err)
    err = expect(
        SchemaMismatch,
        decode_v2,
        columns_request(b={"data": [1, 2.0]}),
        numeric,
        max_rows=5,
    )
    assert str(err).startswith("column 'b', row 1: expected an integer (the tensor's datatype")
    err = expect(
        SchemaMismatch,
        decode_v2,
        columns_request(b={"data": [1, 2**40]}),
        numeric,
        max_rows=5,
    )
    assert str(err).startswith(f"column 'b', row 1: {2**40} is out of range for the INT32 tensor")
    err = expect(
        SchemaMismatch, decode_v2, columns_request(c={"data": [1.0, "x"]}), numeric, max_rows=5
    )
    assert str(err).startswith("column 'c', row 1: expected a number (float32)")
    flags = Signature(inputs=(spec("f", "bool"), spec("k", "category", categories=(1, 2))))
    ok = decode_v2(
        {"inputs": [tensor("f", [1], "BOOL", [True]), tensor("k", [1], "INT64", [2])]},
        flags,
        max_rows=1,
    )
    assert ok.columns == {"f": [True], "k": [2]}
    err = expect(
        SchemaMismatch,
        decode_v2,
        {"inputs": [tensor("f", [1], "INT8", [1]), tensor("k", [1], "INT64", [2])]},
        flags,
        max_rows=1,
    )
    assert err.column == "f" and "which takes BOOL" in str(err)


def test_v2_rows_are_checked_before_the_data(numeric: Signature) -> None:
    err = expect(
        PayloadTooLarge,
        decode_v2,
        columns_request(a={"shape": [10**12], "data": []}),
        numeric,
        max_rows=5,
    )
    assert "10" in str(err) and "at most 5" in str(err)
    expect(
        PayloadTooLarge,
        decode_v2,
        {"inputs": [tensor("x", [6, 3], "FP64", [])]},
        numeric,
        max_rows=5,
    )
    err = expect(
        BadRequest,
        decode_v2,
        columns_request(a={"shape": [3], "data": [1, 2, 3]}),
        numeric,
        max_rows=5,
    )
    assert "different numbers of rows" in str(err)
    expect(
        BadRequest,
        decode_v2,
        columns_request(
            a={"shape": [0], "data": []}, b={"shape": [0], "data": []}, c={"shape": [0], "data": []}
        ),
        numeric,
        max_rows=5,
    )


def test_v2_single_row_fast_path_still_refuses_bad_values(numeric: Signature) -> None:
    for change, message in [
        ({"a": {"data": [math.nan]}}, "missing value not allowed"),
        ({"a": {"data": [math.inf]}}, "finite number"),
        ({"a": {"data": [True]}}, "expected a number"),
        ({"b": {"data": [2**31]}}, "out of range"),
        ({"b": {"datatype": "INT64", "data": [1]}}, "which takes INT32"),
        ({"b": {"data": [1.5]}}, "expected an integer"),
        ({"c": {"data": [1e39]}}, "out of range for float32"),
    ]:
        request = columns_request(1, **change)
        err = expect(SchemaMismatch, decode_v2, request, numeric, max_rows=5)
        assert message in str(err), (change, str(err))


# -- metadata and responses --------------------------------------------------------------------


def test_v2_datatypes_of_every_dtype() -> None:
    assert {d: v2_datatype(d) for d in [*DTYPES, "category"]} == {
        **{d: d.upper() for d in DTYPES[:16]},
        "float32": "FP32",
        "float64": "FP64",
        "Float32": "FP32",
        "Float64": "FP64",
        "bool": "BOOL",
        "boolean": "BOOL",
        "string": "BYTES",
        "category": "BYTES",
        "datetime64[ns]": "BYTES",
        "datetime64[s]": "BYTES",
        "datetime64[ns, UTC]": "BYTES",
        "datetime64[us, Europe/Paris]": "BYTES",
    }


def test_model_metadata_follows_the_signature(sig: Signature) -> None:
    meta = v2_model_metadata("cancer", ["1", "2"], sig)
    assert (meta["name"], meta["versions"], meta["platform"]) == ("cancer", ["1", "2"], "modelloop")
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert list(inputs) == sig.columns
    assert inputs["x"] == ("FP64", [-1]) and inputs["small"] == ("INT8", [-1])
    assert inputs["level"] == ("FP64", [-1]) and inputs["color"] == ("BYTES", [-1])
    assert inputs["when_utc"] == ("BYTES", [-1]) and inputs["maybe_flag"] == ("BOOL", [-1])
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    regressor = Signature(inputs=(spec("a", "float64"),), task="regression")
    assert v2_model_metadata("r", [], regressor, platform="sklearn")["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1]}
    ]
    assert v2_model_metadata("r", ["3"], None)["inputs"] == []
    assert output_names(sig) == ["predict", "predict_proba"]
    assert output_names(regressor) == output_names(None) == ["predict"]


def test_encode_v2_classifier_and_requested_outputs(numeric: Signature) -> None:
    pred = np.array(["no", "yes", "yes"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    out = encode_v2("m", "3", "req", pred, proba, numeric, None)
    assert (out["model_name"], out["model_version"], out["id"]) == ("m", "3", "req")
    assert out["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [3], "data": ["no", "yes", "yes"]},
        {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [3, 2],
            "data": [0.9, 0.1, 0.2, 0.8, 0.4, 0.6],
            "parameters": {"classes": ["no", "yes"]},
        },
    ]
    only = encode_v2("m", "3", "req", pred, proba, numeric, ["predict_proba"])
    assert [t["name"] for t in only["outputs"]] == ["predict_proba"]
    json.dumps(out, allow_nan=False)  # plain JSON types throughout
    httpclient = pytest.importorskip("tritonclient.http")
    result = httpclient.InferResult.from_response_body(json.dumps(out).encode())
    assert result.as_numpy("predict_proba").shape == (3, 2)
    assert result.as_numpy("predict").tolist() == ["no", "yes", "yes"]


@pytest.mark.parametrize(
    ("prediction", "datatype", "data"),
    [
        (np.array([0, 1, 1]), "INT64", [0, 1, 1]),
        (np.array([1, 2], dtype=np.uint8), "INT64", [1, 2]),
        (np.array([2**64 - 1], dtype=np.uint64), "UINT64", [2**64 - 1]),
        (np.array([True, False]), "BOOL", [True, False]),
        (np.array([0.5, np.nan, np.inf], dtype=np.float32), "FP64", [0.5, None, None]),
        (np.array([1, 2], dtype=object), "INT64", [1, 2]),
        (np.array([1, 2.5], dtype=object), "FP64", [1.0, 2.5]),
        (np.array(["a", 1], dtype=object), "BYTES", ["a", "1"]),
        (np.array([b"a"], dtype=object), "BYTES", ["a"]),
        (np.array(["2020-01-01"], dtype="datetime64[s]"), "BYTES", ["2020-01-01T00:00:00"]),
    ],
)
def test_encode_v2_predict_datatype_follows_the_values(
    prediction: np.ndarray, datatype: str, data: list[Any]
) -> None:
    out = encode_v2("m", "1", "r", prediction, None, None, None)
    assert out["outputs"] == [
        {"name": "predict", "datatype": datatype, "shape": [len(data)], "data": data}
    ]


def test_encode_records_classifier_and_regressor() -> None:
    out = encode_records(
        "m",
        4,
        "req",
        "canary",
        np.array([1, 0]),
        np.array([[0.25, 0.75], [0.5, np.nan]]),
        (np.int64(0), np.int64(1)),
    )
    assert out == {
        "request_id": "req",
        "model_name": "m",
        "model_version": 4,
        "route": "canary",
        "predictions": [1, 0],
        "probabilities": [[0.25, 0.75], [0.5, None]],
        "classes": [0, 1],
    }
    json.dumps(out, allow_nan=False)
    reg = encode_records("m", 1, "r", "champion", np.array([1.5]), None, None)
    assert reg == {
        "request_id": "r",
        "model_name": "m",
        "model_version": 1,
        "route": "champion",
        "predictions": [1.5],
    }


# -- speed -------------------------------------------------------------------------------------


def test_single_row_decoding_is_fast() -> None:
    """30 float columns, one row: parse + decode + validate well under the per-request budget."""
    s = Signature(inputs=tuple(spec(f"feature {i}", "float64") for i in range(30)))
    body = json.dumps({"records": [{f"feature {i}": 0.5 + i for i in range(30)}]}).encode()
    v2 = json.dumps(
        {"inputs": [tensor(f"feature {i}", [1], "FP64", [0.5 + i]) for i in range(30)]}
    ).encode()
    assert decode_records(parse_json(body), s, max_rows=1).n_rows == 1
    best = (
        min(
            timeit.repeat(
                lambda: decode_records(parse_json(body), s, max_rows=1), number=200, repeat=5
            )
        )
        / 200
    )
    best_v2 = (
        min(timeit.repeat(lambda: decode_v2(parse_json(v2), s, max_rows=1), number=200, repeat=5))
        / 200
    )
    # ~25 us and ~80 us on an idle core; the bound leaves room for a loaded test machine
    assert best < 250e-6 and best_v2 < 600e-6, (best, best_v2)
