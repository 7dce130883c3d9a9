"""Every bad input to a real ``modelloop serve`` process gets the stated status and a message
naming the field: 422 for values and columns that do not fit the signature, 400 for malformed
JSON, 415 for anything but JSON (never deserialized), 413 for bodies over the byte limit (before
parsing) and for too many rows."""

from __future__ import annotations

import json
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import Server, assert_error, register_mixed, start_server

MAX_BODY = 4000
MAX_ROWS = 5
GOOD = {"amount": 101.5, "count": 3, "flag": True, "city": "paris"}
DATATYPES = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "city": "BYTES"}
V1 = "/v1/models/mixed/predict"
V2 = "/v2/models/mixed/infer"
FEEDBACK = "/v1/models/mixed/feedback"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("validation") / "home"
    register_mixed(home)
    srv = start_server(
        home,
        ["mixed@champion"],
        "--max-body-bytes", str(MAX_BODY),
        "--max-rows", str(MAX_ROWS),
        "--no-log",
    )  # fmt: skip
    try:
        yield srv
    finally:
        srv.terminate()


def post_json_text(http: Any, path: str, text: str | bytes) -> Any:
    body = text.encode() if isinstance(text, str) else text
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def records(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"records": list(rows)}


def columns(*rows: dict[str, Any]) -> dict[str, Any]:
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {"columns": {n: [r.get(n) for r in rows] for n in names}}


def tensors(*rows: dict[str, Any], datatypes: dict[str, str] | None = None) -> dict[str, Any]:
    types = {**DATATYPES, **(datatypes or {})}
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {
        "inputs": [
            {"name": n, "shape": [len(rows)], "datatype": types.get(n, "FP64"),
             "data": [r.get(n) for r in rows]}
            for n in names
        ]
    }  # fmt: skip


FORMS = {
    "v1-records": (V1, records),
    "v1-columns": (V1, columns),
    "v2": (V2, tensors),
}


@pytest.fixture(params=list(FORMS))
def form(request: pytest.FixtureRequest) -> tuple[str, Any]:
    return FORMS[request.param]


def test_good_input_is_accepted_in_every_form(http: Any, form: tuple[str, Any]) -> None:
    path, build = form
    response = http.post(path, json=build(GOOD, {**GOOD, "city": "nice"}))
    assert response.status_code == 200, response.text


# -- columns ---------------------------------------------------------------------------------


def test_missing_column_is_422_naming_it(http: Any, form: tuple[str, Any]) -> None:
    path, build = form
    row = {k: v for k, v in GOOD.items() if k != "count"}
    assert_error(http.post(path, json=build(row)), 422, "'count'")


def test_extra_column_is_422_naming_it(http: Any, form: tuple[str, Any]) -> None:
    path, build = form
    assert_error(http.post(path, json=build({**GOOD, "zipcode": 75001})), 422, "zipcode")


def test_misspelled_column_is_422_naming_both(http: Any, form: tuple[str, Any]) -> None:
    path, build = form
    row = {k: v for k, v in GOOD.items() if k != "city"} | {"City": "paris"}
    assert_error(http.post(path, json=build(row)), 422, "'city'", "City")


def test_v2_duplicate_tensor_is_422_naming_it(http: Any) -> None:
    payload = tensors(GOOD)
    payload["inputs"].append(dict(payload["inputs"][0]))
    assert_error(http.post(V2, json=payload), 422, "amount")


# -- values ----------------------------------------------------------------------------------

BAD_VALUES = [
    pytest.param("amount", "abc", id="string-for-float"),
    pytest.param("amount", "1.5", id="numeric-string-for-float"),
    pytest.param("amount", True, id="bool-for-float"),
    pytest.param("amount", None, id="null-for-float"),
    pytest.param("amount", [1.0], id="list-for-float"),
    pytest.param("count", "3", id="string-for-int"),
    pytest.param("count", 1.5, id="fraction-for-int"),
    pytest.param("count", 2**70, id="int-out-of-range"),
    pytest.param("flag", 1, id="number-for-bool"),
    pytest.param("flag", "true", id="string-for-bool"),
    pytest.param("city", 5, id="number-for-string"),
    pytest.param("city", None, id="null-for-string"),
]


@pytest.mark.parametrize(("column", "value"), BAD_VALUES)
@pytest.mark.parametrize("where", ["v1-records", "v1-columns"])
def test_v1_wrong_value_is_422_naming_the_column(
    http: Any, column: str, value: Any, where: str
) -> None:
    path, build = FORMS[where]
    rows = (GOOD, {**GOOD, column: value})
    message = assert_error(http.post(path, json=build(*rows)), 422, f"'{column}'")
    assert "row 1" in message


@pytest.mark.parametrize(
    ("column", "datatype", "value"),
    [
        pytest.param("amount", "FP64", "abc", id="string-in-FP64"),
        pytest.param("amount", "BYTES", "1.5", id="BYTES-for-float"),
        pytest.param("amount", "BOOL", True, id="BOOL-for-float"),
        pytest.param("count", "FP64", 1.5, id="FP64-for-int"),
        pytest.param("count", "INT64", 1.5, id="fraction-in-INT64"),
        pytest.param("count", "INT8", 300, id="out-of-range-INT8"),
        pytest.param("flag", "INT64", 1, id="INT64-for-bool"),
        pytest.param("flag", "BOOL", 1, id="number-in-BOOL"),
        pytest.param("city", "INT64", 5, id="INT64-for-string"),
        pytest.param("city", "BYTES", 5, id="number-in-BYTES"),
        pytest.param("amount", "FP64", None, id="null-in-FP64"),
    ],
)
def test_v2_wrong_datatype_or_value_is_422_naming_the_column(
    http: Any, column: str, datatype: str, value: Any
) -> None:
    payload = tensors(GOOD, {**GOOD, column: value}, datatypes={column: datatype})
    assert_error(http.post(V2, json=payload), 422, f"'{column}'")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("where", list(FORMS))
def test_nan_and_inf_are_422_where_not_allowed(http: Any, token: str, where: str) -> None:
    # The mixed model was trained without missing values: NaN is refused like inf.
    path, build = FORMS[where]
    marker = 123456.25
    body = json.dumps(build(GOOD, {**GOOD, "amount": marker})).replace(repr(marker), token)
    assert token in body
    message = assert_error(post_json_text(http, path, body), 422, "'amount'")
    assert "row 1" in message


# -- body shape and JSON ---------------------------------------------------------------------

SHAPE_VS_DATA = tensors(GOOD)
SHAPE_VS_DATA["inputs"][0]["shape"] = [2]

MALFORMED = [
    pytest.param(b'{"records": [', id="truncated"),
    pytest.param(b"{'records': []}", id="single-quotes"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    pytest.param(b'{"records": [{"amount": 1,}]}', id="trailing-comma"),
    pytest.param(b'{"records": ' + b"[" * 3000, id="nested-too-deep"),
]


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_is_400(http: Any, path: str, body: bytes) -> None:
    message = assert_error(post_json_text(http, path, body), 400)
    assert "JSON" in message


@pytest.mark.parametrize(
    ("path", "payload", "named"),
    [
        pytest.param(V1, [GOOD], "object", id="v1-array"),
        pytest.param(V1, {"rows": [GOOD]}, "rows", id="v1-unknown-field"),
        pytest.param(V1, {"records": GOOD}, "records", id="v1-records-not-list"),
        pytest.param(V1, {"records": [1]}, "record 0", id="v1-record-not-object"),
        pytest.param(V1, {"records": [GOOD], "columns": {}}, "columns", id="v1-both-forms"),
        pytest.param(V1, {"columns": {"amount": [1.0, 2.0], "count": [1], "flag": [True],
                                       "city": ["x"]}}, "lengths", id="v1-ragged-columns"),
        pytest.param(V1, {"records": []}, "no rows", id="v1-no-rows"),
        pytest.param(V2, [GOOD], "object", id="v2-array"),
        pytest.param(V2, {"inputs": []}, "inputs", id="v2-no-inputs"),
        pytest.param(V2, SHAPE_VS_DATA, "amount", id="v2-shape-vs-data"),
        pytest.param(V2, {"inputs": [{"name": "amount", "shape": [1], "datatype": "FLOAT",
                                      "data": [1.0]}]}, "FLOAT", id="v2-unknown-datatype"),
    ],
)  # fmt: skip
def test_wrong_body_shape_is_400_naming_what(
    http: Any, path: str, payload: Any, named: str
) -> None:
    assert_error(http.post(path, json=payload), 400, named)


def test_unknown_model_is_404(http: Any) -> None:
    assert_error(http.post("/v1/models/nope/predict", json=records(GOOD)), 404, "nope")
    assert_error(http.post("/v2/models/nope/infer", json=tensors(GOOD)), 404, "nope")


# -- content types: only JSON is ever parsed --------------------------------------------------


class _Armed:
    """Unpickling this creates the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
@pytest.mark.parametrize(
    "ctype",
    ["application/python-pickle", "application/octet-stream", "application/x-python-pickle"],
)
def test_pickle_body_is_415_and_never_deserialized(
    http: Any, tmp_path: Path, path: str, ctype: str
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Armed(control)))  # the payload is armed: loading it writes a file
    assert control.exists()
    marker = tmp_path / "marker"
    body = pickle.dumps(_Armed(marker))
    assert_error(http.post(path, content=body, headers={"Content-Type": ctype}), 415, ctype)
    assert not marker.exists()


def test_pickle_as_v2_binary_extension_is_never_deserialized(http: Any, tmp_path: Path) -> None:
    # The binary tensor extension takes octet-stream, but only its JSON header is parsed.
    marker = tmp_path / "marker"
    body = pickle.dumps(_Armed(marker))
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(body)),
    }
    assert_error(http.post(V2, content=body, headers=headers), 400, "JSON")
    headers["Inference-Header-Content-Length"] = "0"
    assert http.post(V2, content=body, headers=headers).status_code == 400
    assert not marker.exists()


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_form_content_types_are_415(http: Any, path: str) -> None:
    form = http.post(path, data={"amount": "1"})
    assert_error(form, 415, "application/x-www-form-urlencoded")
    multipart = http.post(path, files={"file": ("rows.json", b"{}", "application/json")})
    assert_error(multipart, 415, "multipart/form-data")
    for ctype in ("text/plain", "application/xml", "application/msgpack", "application/x-yaml"):
        other = http.post(path, content=b"{}", headers={"Content-Type": ctype})
        assert_error(other, 415, ctype)


# -- size limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_body_over_limit_is_413_before_parsing(http: Any, path: str) -> None:
    # Not JSON at all: a 413 (not 400) shows the size was checked before parsing.
    body = b"{" * (MAX_BODY + 1)
    assert_error(post_json_text(http, path, body), 413, str(MAX_BODY))
    assert post_json_text(http, path, b"{" * MAX_BODY).status_code == 400


@pytest.mark.parametrize("path", [V1, V2, FEEDBACK])
def test_chunked_body_over_limit_is_413(http: Any, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 100 + 2):
            yield b"{" * 100

    response = http.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, str(MAX_BODY))


def test_declared_huge_body_is_refused_without_reading_it(server: Server) -> None:
    # Only the headers and a few bytes are sent: the answer must not wait for the rest.
    request = (
        f"POST {V1} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 2**20}\r\n\r\n"
    ).encode() + b'{"records": ['
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head


@pytest.mark.parametrize("where", list(FORMS))
def test_too_many_rows_is_413(http: Any, where: str) -> None:
    path, build = FORMS[where]
    ok = http.post(path, json=build(*[GOOD] * MAX_ROWS))
    assert ok.status_code == 200, ok.text
    message = assert_error(http.post(path, json=build(*[GOOD] * (MAX_ROWS + 1))), 413)
    assert str(MAX_ROWS) in message


# -- feedback --------------------------------------------------------------------------------


def test_feedback_accepts_good_labels(http: Any) -> None:
    one = http.post(FEEDBACK, json={"request_id": "r-1", "label": 1})
    assert one.status_code == 200, one.text
    assert one.json()["accepted"] == 1
    many = http.post(FEEDBACK, json={"labels": [{"request_id": "r-2", "label": 0},
                                                {"request_id": "r-3", "label": 1}]})  # fmt: skip
    assert many.status_code == 200 and many.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("payload", "status", "named"),
    [
        pytest.param([{"request_id": "a", "label": 1}], 400, "object", id="array"),
        pytest.param({"label": 1}, 422, "request_id", id="missing-request-id"),
        pytest.param({"request_id": 5, "label": 1}, 422, "request_id", id="request-id-number"),
        pytest.param({"request_id": "", "label": 1}, 422, "request_id", id="request-id-empty"),
        pytest.param({"request_id": "a"}, 422, "label", id="missing-label"),
        pytest.param({"request_id": "a", "label": None}, 422, "label", id="null-label"),
        pytest.param({"request_id": "a", "label": {"x": 1}}, 422, "label", id="object-label"),
        pytest.param({"request_id": "a", "label": 7}, 422, "label", id="not-a-class"),
        pytest.param({"request_id": "a", "label": "1"}, 422, "label", id="string-for-int-class"),
        pytest.param({"request_id": "a", "label": 1, "extra": 2}, 400, "extra",
                     id="unknown-field"),
        pytest.param({"labels": []}, 400, "labels", id="empty-labels"),
        pytest.param({"labels": "x"}, 400, "labels", id="labels-not-list"),
        pytest.param({"labels": [5]}, 400, "labels[0]", id="label-item-not-object"),
        pytest.param({"labels": [{"request_id": "a", "label": 1},
                                 {"request_id": "b", "label": 9}]}, 422, "labels[1]",
                     id="second-not-a-class"),
        pytest.param({"labels": [{"request_id": "a", "label": 1}], "x": 1}, 400, "x",
                     id="labels-unknown-field"),
    ],
)  # fmt: skip
def test_feedback_bad_input(http: Any, payload: Any, status: int, named: str) -> None:
    assert_error(http.post(FEEDBACK, json=payload), status, named)


def test_feedback_infinite_label_is_422(http: Any) -> None:
    body = b'{"request_id": "a", "label": Infinity}'
    assert_error(post_json_text(http, FEEDBACK, body), 422, "label")


def test_feedback_too_many_labels_is_413(http: Any) -> None:
    labels = [{"request_id": f"r{i}", "label": 1} for i in range(MAX_ROWS + 1)]
    assert_error(http.post(FEEDBACK, json={"labels": labels}), 413, str(MAX_ROWS))


def test_feedback_unknown_model_is_404(http: Any) -> None:
    response = http.post("/v1/models/nope/feedback", json={"request_id": "a", "label": 1})
    assert_error(response, 404, "nope")


# -- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "text", "key"),
    [
        pytest.param("POST", V1, '{"records": [{"amount": 1.5, "count": 3, "count": 2, '
                     '"flag": true, "city": "paris"}]}', "count", id="v1-record"),
        pytest.param("POST", V1, '{"records": [], "records": [{"amount": 1.5, "count": 3, '
                     '"flag": true, "city": "paris"}]}', "records", id="v1-top-level"),
        pytest.param("POST", V1, '{"columns": {"amount": [1.5], "count": [3], "flag": [true], '
                     '"city": ["paris"], "city": ["lyon"]}}', "city", id="v1-columns"),
        pytest.param("POST", V2, '{"inputs": [{"name": "amount", "name": "count", "shape": [1], '
                     '"datatype": "INT64", "data": [3]}]}', "name", id="v2-tensor"),
        pytest.param("POST", FEEDBACK, '{"request_id": "a", "label": 0, "label": 1}', "label",
                     id="feedback"),
        pytest.param("PUT", "/v1/admin/models/mixed/routing", '{"mode": "off", "mode": "shadow"}',
                     "mode", id="admin-routing"),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_400_naming_it(
    http: Any, method: str, path: str, text: str, key: str
) -> None:
    response = http.request(
        method, path, content=text.encode(), headers={"Content-Type": "application/json"}
    )
    message = assert_error(response, 400, repr(key))
    assert "twice" in message
