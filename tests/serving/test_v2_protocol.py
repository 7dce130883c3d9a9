"""Open Inference Protocol V2 conformance of a real ``modelloop serve`` process: the real
``tritonclient.http`` client, and raw HTTP checks of every V2 route's JSON shape."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_support import (
    Server,
    breast_cancer,
    mixed_frame,
    register_mixed,
    register_rf,
    start_server,
)

V2_DATATYPES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
}  # fmt: skip
MIXED_DATATYPES = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "city": "BYTES"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One home with the random forest (``cancer``) and the mixed-type model, one server."""
    home = tmp_path_factory.mktemp("v2") / "home"
    register_rf(home)
    register_mixed(home)
    server = start_server(home, ["cancer@champion", "mixed@champion"], "--no-log")
    try:
        yield server, home
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def server(served: tuple[Server, Path]) -> Server:
    return served[0]


@pytest.fixture(scope="module")
def triton(server: Server) -> Any:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=60.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def local(served: tuple[Server, Path]) -> Iterator[dict[str, Any]]:
    """The served models loaded in this process, for reference predictions."""
    from modelloop._client import Client
    from modelloop._config import Settings

    client = Client(Settings(home=served[1]))
    try:
        yield {
            name: client.load_model(f"models:/{name}@champion", allow_pickle=True)
            for name in ("cancer", "mixed")
        }
    finally:
        client.close()


def raw(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, str]:
    """(status, parsed JSON body, content type) of one plain HTTP request whose body is
    ``body`` as JSON, or the bytes ``data`` as they are (JSON content type either way)."""
    if body is not None:
        data = json.dumps(body).encode()
    sent = {} if data is None else {"Content-Type": "application/json"}
    req = urllib.request.Request(
        server.url + path, data=data, method=method, headers={**sent, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("content-type", "")


def mixed_inputs(frame: pd.DataFrame, *, binary: bool, types: dict[str, str] | None = None) -> list:
    import tritonclient.http as httpclient

    types = {**MIXED_DATATYPES, **(types or {})}
    numpy_type = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32,
                  "BOOL": np.bool_, "BYTES": object}  # fmt: skip
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy().astype(numpy_type[types[name]])
        tensor = httpclient.InferInput(name, [len(values)], types[name])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def json_outputs(*names: str) -> list:
    import tritonclient.http as httpclient

    return [httpclient.InferRequestedOutput(n, binary_data=False) for n in names]


def mixed_rows(n: int = 12) -> pd.DataFrame:
    frame, _ = mixed_frame(n, seed=7)
    return frame


def assert_error_body(status: int, body: Any, expected_status: int) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]


# -- tritonclient ------------------------------------------------------------------------------


def test_server_health_and_metadata_via_tritonclient(triton: Any) -> None:
    from modelloop import __version__

    assert triton.is_server_live() is True
    assert triton.is_server_ready() is True
    meta = triton.get_server_metadata()
    assert meta["name"] == "modelloop"
    assert meta["version"] == __version__
    assert meta["extensions"] == ["binary_tensor_data"]  # what this server implements


def test_model_readiness_via_tritonclient(triton: Any) -> None:
    assert triton.is_model_ready("mixed") is True
    assert triton.is_model_ready("cancer", "1") is True
    assert triton.is_model_ready("mixed", "7") is False
    assert triton.is_model_ready("no-such-model") is False


def test_model_metadata_derived_from_signature(triton: Any, local: dict[str, Any]) -> None:
    meta = triton.get_model_metadata("mixed")
    assert meta["name"] == "mixed"
    assert meta["versions"] == ["1"]
    assert meta["platform"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("amount", "FP64", [-1]),
        ("count", "INT64", [-1]),
        ("flag", "BOOL", [-1]),
        ("city", "BYTES", [-1]),
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("predict", "INT64", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    cancer = triton.get_model_metadata("cancer", "1")
    signature = local["cancer"].signature
    assert [t["name"] for t in cancer["inputs"]] == [c.name for c in signature.inputs]
    assert {t["datatype"] for t in cancer["inputs"]} == {"FP64"}
    assert cancer["versions"] == ["1"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_mixed_datatypes_matches_in_process(
    triton: Any, local: dict[str, Any], binary: bool
) -> None:
    frame = mixed_rows(12)
    result = triton.infer(
        "mixed",
        mixed_inputs(frame, binary=binary),
        outputs=json_outputs("predict", "predict_proba"),
        request_id=f"req-{binary}",
    )
    response = result.get_response()
    assert response["model_name"] == "mixed"
    assert response["model_version"] == "1"
    assert response["id"] == f"req-{binary}"
    model = local["mixed"]
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(frame))
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (12, 2)
    np.testing.assert_allclose(proba, model.predict_proba(frame), rtol=0, atol=1e-12)
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["predict"]["datatype"] == "INT64"
    assert by_name["predict_proba"]["parameters"]["classes"] == [0, 1]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_narrower_datatypes_are_refused_naming_the_input(triton: Any, binary: bool) -> None:
    # The protocol: a tensor has its input's own datatype. INT32 for an INT64 input and FP32 for
    # an FP64 one are refused, naming the input and the datatype it takes.
    from tritonclient.utils import InferenceServerException

    frame = mixed_rows(6)
    for column, datatype, own in (("count", "INT32", "INT64"), ("amount", "FP32", "FP64")):
        with pytest.raises(InferenceServerException) as info:
            triton.infer(
                "mixed",
                mixed_inputs(frame, binary=binary, types={column: datatype}),
                outputs=json_outputs("predict"),
            )
        assert info.value.status() == "422"
        assert f"input '{column}': datatype {datatype} does not match" in str(info.value)
        assert f"which takes {own}" in str(info.value)


def test_infer_default_outputs_returns_both(triton: Any, local: dict[str, Any]) -> None:
    frame = mixed_rows(3)
    result = triton.infer("mixed", mixed_inputs(frame, binary=False))
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["predict", "predict_proba"]
    np.testing.assert_array_equal(result.as_numpy("predict"), local["mixed"].predict(frame))


def test_infer_only_one_requested_output(triton: Any, local: dict[str, Any]) -> None:
    frame = mixed_rows(4)
    result = triton.infer(
        "mixed", mixed_inputs(frame, binary=False), outputs=json_outputs("predict_proba")
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    assert result.as_numpy("predict") is None
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), local["mixed"].predict_proba(frame), atol=1e-12
    )


def test_infer_with_version_path(triton: Any, local: dict[str, Any]) -> None:
    import tritonclient.http as httpclient

    X, _ = breast_cancer()
    rows = X.iloc[100:105]
    inputs = []
    for name in rows.columns:
        tensor = httpclient.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(rows[name].to_numpy(np.float64), binary_data=False)
        inputs.append(tensor)
    result = triton.infer("cancer", inputs, model_version="1", outputs=json_outputs("predict"))
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("predict"), local["cancer"].predict(rows))


def test_unknown_model_and_version_raise_in_tritonclient(triton: Any) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("no-such-model")
    assert "no-such-model" in str(info.value)
    with pytest.raises(InferenceServerException, match="7"):
        triton.get_model_metadata("mixed", "7")
    with pytest.raises(InferenceServerException, match="no-such-model"):
        triton.infer("no-such-model", mixed_inputs(mixed_rows(1), binary=False))


def test_infer_bad_datatype_is_an_error_naming_the_input(triton: Any) -> None:
    from tritonclient.utils import InferenceServerException

    frame = mixed_rows(2)
    frame["count"] = frame["count"].astype(float) + 0.5
    with pytest.raises(InferenceServerException, match="count") as info:
        triton.infer("mixed", mixed_inputs(frame, binary=False, types={"count": "FP64"}))
    assert info.value.status() in ("400", "422")


# -- raw HTTP: each route's JSON shape per the spec ---------------------------------------------


def test_raw_server_metadata(server: Server) -> None:
    status, body, ctype = raw(server, "GET", "/v2")
    assert status == 200 and ctype.startswith("application/json")
    assert set(body) >= {"name", "version", "extensions"}
    assert isinstance(body["name"], str) and isinstance(body["version"], str)
    assert all(isinstance(e, str) for e in body["extensions"])


def test_raw_health(server: Server) -> None:
    assert raw(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert raw(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})


@pytest.mark.parametrize("path", ["/v2/models/mixed", "/v2/models/mixed/versions/1"])
def test_raw_model_metadata(server: Server, path: str) -> None:
    status, body, _ = raw(server, "GET", path)
    assert status == 200
    assert set(body) >= {"name", "platform", "inputs", "outputs"}
    assert body["name"] == "mixed" and isinstance(body["platform"], str)
    assert body["versions"] == ["1"]
    for tensor in body["inputs"] + body["outputs"]:
        assert set(tensor) == {"name", "datatype", "shape"}
        assert tensor["datatype"] in V2_DATATYPES
        assert all(isinstance(d, int) and (d == -1 or d >= 0) for d in tensor["shape"])
    assert {t["name"]: t["datatype"] for t in body["inputs"]} == MIXED_DATATYPES


@pytest.mark.parametrize("path", ["/v2/models/cancer/ready", "/v2/models/cancer/versions/1/ready"])
def test_raw_model_ready(server: Server, path: str) -> None:
    assert raw(server, "GET", path)[:2] == (200, {"name": "cancer", "ready": True})


def v2_request(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    inputs = []
    for name in frame.columns:
        values = frame[name].tolist()
        inputs.append(
            {"name": name, "shape": [len(values)], "datatype": MIXED_DATATYPES[name],
             "data": values}
        )  # fmt: skip
    return {"inputs": inputs, **extra}


@pytest.mark.parametrize("path", ["/v2/models/mixed/infer", "/v2/models/mixed/versions/1/infer"])
def test_raw_infer_response_shape(server: Server, local: dict[str, Any], path: str) -> None:
    frame = mixed_rows(5)
    status, body, ctype = raw(server, "POST", path, v2_request(frame, id="raw-42"))
    assert status == 200, body
    assert ctype.startswith("application/json")
    assert body["model_name"] == "mixed"
    assert body["model_version"] == "1"
    assert body["id"] == "raw-42"
    for out in body["outputs"]:
        assert set(out) >= {"name", "shape", "datatype", "data"}
        assert out["datatype"] in V2_DATATYPES
        assert len(out["data"]) == math.prod(out["shape"])
    outs = {o["name"]: o for o in body["outputs"]}
    assert outs["predict"]["shape"] == [5]
    assert outs["predict"]["data"] == local["mixed"].predict(frame).tolist()
    assert outs["predict_proba"]["shape"] == [5, 2]
    np.testing.assert_allclose(
        np.array(outs["predict_proba"]["data"]).reshape(5, 2),
        local["mixed"].predict_proba(frame),
        atol=1e-12,
    )


def test_raw_infer_2d_numeric_tensor(server: Server, local: dict[str, Any]) -> None:
    # One [n, n_columns] tensor is mapped onto the columns in signature order.
    X, _ = breast_cancer()
    rows = X.iloc[:4]
    request = {
        "inputs": [
            {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
             "data": rows.to_numpy().tolist()}
        ],
        "outputs": [{"name": "predict"}],
    }  # fmt: skip
    status, body, _ = raw(server, "POST", "/v2/models/cancer/infer", request)
    assert status == 200, body
    assert [o["name"] for o in body["outputs"]] == ["predict"]
    assert body["outputs"][0]["data"] == local["cancer"].predict(rows).tolist()


def test_raw_infer_without_id_gets_one(server: Server) -> None:
    status, body, _ = raw(server, "POST", "/v2/models/mixed/infer", v2_request(mixed_rows(1)))
    assert status == 200
    assert isinstance(body["id"], str) and body["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/no-such-model"),
        ("GET", "/v2/models/no-such-model/ready"),
        ("GET", "/v2/models/no-such-model/versions/1"),
        ("GET", "/v2/models/no-such-model/versions/1/ready"),
        ("GET", "/v2/models/mixed/versions/7"),
        ("GET", "/v2/models/mixed/versions/7/ready"),
        ("GET", "/v2/models/mixed/versions/abc"),
        ("POST", "/v2/models/no-such-model/infer"),
        ("POST", "/v2/models/no-such-model/versions/1/infer"),
        ("POST", "/v2/models/mixed/versions/7/infer"),
    ],
)
def test_raw_unknown_model_or_version_is_404(server: Server, method: str, path: str) -> None:
    body = v2_request(mixed_rows(1)) if method == "POST" else None
    status, payload, ctype = raw(server, method, path, body)
    assert_error_body(status, payload, 404)
    assert ctype.startswith("application/json")


def test_raw_unknown_requested_output_is_400(server: Server) -> None:
    request = v2_request(mixed_rows(1), outputs=[{"name": "nope"}])
    status, body, _ = raw(server, "POST", "/v2/models/mixed/infer", request)
    assert_error_body(status, body, 400)
    assert "nope" in body["error"]


def test_raw_missing_tensor_is_422_naming_it(server: Server) -> None:
    request = v2_request(mixed_rows(1).drop(columns=["city"]))
    status, body, _ = raw(server, "POST", "/v2/models/mixed/infer", request)
    assert_error_body(status, body, 422)
    assert "city" in body["error"]


@pytest.mark.parametrize(
    ("column", "datatype"),
    [
        ("count", "INT8"),
        ("count", "INT16"),
        ("count", "INT32"),
        ("count", "UINT8"),
        ("count", "UINT32"),
        ("count", "UINT64"),
        ("count", "FP64"),
        ("amount", "INT64"),
        ("amount", "FP32"),
        ("amount", "FP16"),
    ],
)
def test_raw_infer_refuses_datatypes_other_than_the_inputs_own(
    server: Server, column: str, datatype: str
) -> None:
    frame = mixed_rows(4)
    frame["amount"] = frame["amount"].round()  # values that any of these datatypes could hold
    request = v2_request(frame)
    for tensor in request["inputs"]:
        if tensor["name"] == column:
            tensor["datatype"] = datatype
            tensor["data"] = [int(v) for v in tensor["data"]]
    status, body, _ = raw(server, "POST", "/v2/models/mixed/infer", request)
    assert_error_body(status, body, 422)
    assert (
        f"input {column!r}: datatype {datatype} does not match column {column!r}" in body["error"]
    )
    assert f"which takes {MIXED_DATATYPES[column]}" in body["error"]


# -- binary tensor data in answers, compressed requests ------------------------------------------


def test_binary_outputs_requested_per_output_via_tritonclient(
    triton: Any, local: dict[str, Any]
) -> None:
    import tritonclient.http as httpclient

    frame = mixed_rows(7)
    model = local["mixed"]
    result = triton.infer(
        "mixed",
        mixed_inputs(frame, binary=True),
        outputs=[
            httpclient.InferRequestedOutput("predict", binary_data=True),
            httpclient.InferRequestedOutput("predict_proba", binary_data=False),
        ],
    )
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" not in outputs["predict"]
    assert outputs["predict"]["parameters"]["binary_data_size"] == 7 * 8  # INT64
    assert "data" in outputs["predict_proba"] and "binary_data_size" not in outputs[
        "predict_proba"
    ].get("parameters", {})
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(frame))
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), model.predict_proba(frame), rtol=0, atol=1e-12
    )


def test_binary_outputs_by_default_in_tritonclient(triton: Any, local: dict[str, Any]) -> None:
    # Without outputs tritonclient asks for all of them as binary (binary_data_output).
    frame = mixed_rows(5)
    result = triton.infer("mixed", mixed_inputs(frame, binary=False))
    for out in result.get_response()["outputs"]:
        assert "data" not in out and out["parameters"]["binary_data_size"] > 0
    np.testing.assert_array_equal(result.as_numpy("predict"), local["mixed"].predict(frame))
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (5, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba, local["mixed"].predict_proba(frame), rtol=0, atol=1e-12)


def test_raw_binary_answer_layout(server: Server, local: dict[str, Any]) -> None:
    frame = mixed_rows(3)
    request = v2_request(frame, parameters={"binary_data_output": True})
    req = urllib.request.Request(
        server.url + "/v2/models/mixed/infer",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        assert r.headers["content-type"] == "application/octet-stream"
        length = int(r.headers["inference-header-content-length"])
        body = r.read()
    header = json.loads(body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["name"] for o in header["outputs"]] == ["predict", "predict_proba"]
    assert sizes == [3 * 8, 3 * 2 * 8] and len(body) == length + sum(sizes)
    predict = np.frombuffer(body[length : length + sizes[0]], "<i8")
    np.testing.assert_array_equal(predict, local["mixed"].predict(frame))
    # a bad flag is refused, naming it
    request["parameters"]["binary_data_output"] = "yes"
    status, answer, _ = raw(server, "POST", "/v2/models/mixed/infer", request)
    assert_error_body(status, answer, 400)
    assert "binary_data_output" in answer["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_via_tritonclient(
    triton: Any, local: dict[str, Any], algorithm: str
) -> None:
    frame = mixed_rows(9)
    for binary in (False, True):
        result = triton.infer(
            "mixed",
            mixed_inputs(frame, binary=binary),
            outputs=json_outputs("predict"),
            request_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("predict"), local["mixed"].predict(frame))


def post_encoded(server: Server, path: str, data: bytes, encoding: str) -> tuple[int, Any]:
    status, body, _ = raw(server, "POST", path, data=data, headers={"Content-Encoding": encoding})
    return status, body


def peak_rss_kib(server: Server) -> int:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def test_compressed_body_limits(server: Server) -> None:
    import gzip
    import zlib

    path = "/v2/models/mixed/infer"
    # an unknown encoding: 415 naming it, never "not valid JSON"
    status, body = post_encoded(server, path, b"x", "br")
    assert_error_body(status, body, 415)
    assert "'br'" in body["error"] and "gzip" in body["error"]
    # not what it claims to be
    status, body = post_encoded(server, path, b'{"inputs": []}', "gzip")
    assert_error_body(status, body, 400)
    assert "not valid gzip data" in body["error"]
    status, body = post_encoded(server, path, zlib.compress(b'{"inputs": []}')[:-3], "deflate")
    assert_error_body(status, body, 400)
    # over the 4 MiB limit once inflated, though small on the wire: 413
    big = json.dumps({"inputs": [{"name": "x", "data": [0.5] * 1_200_000}]}).encode()
    assert len(big) > 4 * 2**20
    status, body = post_encoded(server, path, gzip.compress(big), "gzip")
    assert_error_body(status, body, 413)
    # a bomb (256 MiB of zeros in about 256 KiB) is refused without being inflated in memory
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(2**20)
    bomb = b"".join(packer.compress(chunk) for _ in range(256)) + packer.flush()
    assert len(bomb) < 2**19
    before = peak_rss_kib(server)
    status, body = post_encoded(server, path, bomb, "gzip")
    assert_error_body(status, body, 413)
    assert "inflates to over the limit" in body["error"]
    assert peak_rss_kib(server) - before < 64 * 1024  # KiB: far below the 256 MiB it holds
