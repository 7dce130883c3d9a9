"""The OpenAPI document of the server and the direct prediction routes' contract."""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from serving_support import Server, register_rf, row_records, start_server

from modelloop._config import Settings
from modelloop.serving import create_app


def test_openapi_has_one_operation_per_path_and_answer_schemas(tmp_path: Path) -> None:
    app = create_app(["cancer@champion"], settings=Settings(home=tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a duplicate operation id would warn
        doc = app.openapi()
    methods = {p: sorted(ops) for p, ops in doc["paths"].items()}
    assert methods["/v2/health/ready"] == ["get"]  # HEAD answers, but is not documented
    assert methods["/v1/models/{name}/predict"] == ["post"]
    assert {"head"}.isdisjoint(m for ops in methods.values() for m in ops)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    answer = doc["paths"]["/v1/models/{name}/predict"]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["type"] == "object"
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        answer = doc["paths"][path]["post"]["responses"]["200"]["content"]
        assert answer["application/json"]["schema"] == {
            "$ref": "#/components/schemas/V2InferenceResponse"
        }
        assert answer["application/octet-stream"]["schema"]["format"] == "binary"
    assert "requestBody" in doc["paths"]["/v1/models/{name}/predict"]["post"]
    heads = [r for r in app.routes if "HEAD" in getattr(r, "methods", ())]
    assert {r.path for r in heads} >= {"/v2/health/live", "/v2/health/ready", "/metrics"}


def test_a_direct_route_refuses_dependencies() -> None:
    from modelloop.serving._routes import _DirectRoute

    def needs_something() -> int:
        return 1

    async def endpoint(request, name: str):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")

    app = FastAPI()
    with pytest.raises(TypeError, match="cannot have dependencies"):
        app.router.add_api_route(
            "/x/{name}",
            endpoint,
            methods=["POST"],
            route_class_override=_DirectRoute,
            dependencies=[Depends(needs_something)],
        )


# -- the document says what the server does -----------------------------------------------------

ADMIN = "admin-token-0123456789abcdef"
PREDICT = "predict-token-0123456789abcdef"


def document(tmp_path: Path, *, tokens: bool) -> dict:
    from modelloop.serving import ServeConfig
    from modelloop.serving._auth import Token

    config = ServeConfig(tokens=(Token(ADMIN), Token(PREDICT, "predict")) if tokens else ())
    app = create_app(["cancer@champion"], settings=Settings(home=tmp_path / "home"), config=config)
    return app.openapi()


@pytest.mark.parametrize("tokens", [False, True], ids=["open", "tokens"])
def test_openapi_document_is_valid_and_declares_what_the_server_sends(
    tmp_path: Path, tokens: bool
) -> None:
    from openapi_spec_validator import validate

    doc = document(tmp_path, tokens=tokens)
    validate(doc)  # raises on an invalid document
    schemas = doc["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert "HTTPValidationError" not in schemas  # FastAPI's {detail: [...]} is never sent
    error = {"$ref": "#/components/schemas/Error"}
    special = {"/v2/health/live", "/v2/health/ready", "/v2/models/{name}/ready",
               "/v2/models/{name}/versions/{version}/ready"}  # fmt: skip
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            assert "200" in codes, (method, path)
            assert ("401" in codes) == tokens, (method, path)
            assert ("403" in codes) == (tokens and path.startswith("/v1/admin")), (method, path)
            for code, answer in op["responses"].items():
                if code == "200" or path in special:
                    continue
                assert answer["content"]["application/json"]["schema"] == error, (path, code)
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]["responses"]
    assert set(predict) >= {"400", "404", "413", "415", "422", "503"}
    assert "Retry-After" in predict["503"]["headers"]
    assert doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {
            "$ref": "#/components/schemas/V2InferenceRequest"
        }
    for path, method in (
        ("/v1/models/{name}/predict", "post"),
        ("/v1/models/{name}/feedback", "post"),
        ("/v1/admin/models/{name}/routing", "put"),
    ):
        assert doc["paths"][path][method]["requestBody"]["required"] is True
    if tokens:
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_a_route_without_declared_statuses_fails_the_document() -> None:
    from modelloop.serving._openapi import amend

    doc = {"paths": {"/v2/new": {"get": {"responses": {"200": {"description": "ok"}}}}}}
    with pytest.raises(RuntimeError, match="GET /v2/new has no entry"):
        amend(doc, auth=False)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list]]:
    """A server with tokens and a small body limit, and the statuses seen while it loaded."""
    home = tmp_path_factory.mktemp("doc") / "home"
    register_rf(home)
    server = start_server(
        home,
        ["cancer@champion"],
        "--token", ADMIN, "--token", f"{PREDICT}:predict", "--no-log",
        "--max-body-bytes", "200000", "--max-rows", "50",
        wait_ready=False,
    )  # fmt: skip
    seen: list = []
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        deadline = time.monotonic() + 60  # while it loads: 503 with Retry-After
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{server.url}/v2/models/cancer", headers=auth, timeout=10)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            seen.append(("get", "/v2/models/{name}", r.status_code, r))
            if r.status_code == 200:
                break
        yield server, seen
    finally:
        server.terminate()


def test_every_status_the_server_answers_is_declared(
    guarded: tuple[Server, list], tmp_path: Path
) -> None:
    server, seen = guarded
    doc = document(tmp_path, tokens=True)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    predict = {"Authorization": f"Bearer {PREDICT}"}
    json_type = {"Content-Type": "application/json"}
    rows = row_records(2)
    v2 = {
        "inputs": [
            {"name": k, "shape": [2], "datatype": "FP64", "data": [r[k] for r in rows]}
            for k in rows[0]
        ]
    }
    big = b'{"records": [' + b"1," * 120_000 + b"1]}"
    many = json.dumps({"records": row_records(60)}).encode()
    cases: list[tuple[str, str, str, dict, bytes | None]] = []

    def case(method: str, template: str, path: str, body: Any = None, **headers: str) -> None:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        cases.append((method, template, path, headers, data))

    def body_cases(method: str, template: str, path: str, good: Any, schema_bad: Any) -> None:
        case(method, template, path, good, **json_type)
        case(method, template, path, b"{not json", **json_type)
        case(method, template, path, b"[1]", **json_type)
        case(method, template, path, schema_bad, **json_type)
        case(method, template, path, b"a=1", **{"Content-Type": "text/plain"})
        case(method, template, path, b"x", **json_type, **{"Content-Encoding": "br"})
        case(method, template, path, big, **json_type)
        case(method, template, path, many, **json_type)
        case(method, template, path.replace("cancer", "nope"), good, **json_type)

    for template in ("/v2", "/v2/health/live", "/v2/health/ready", "/v1/models", "/metrics",
                     "/v1/admin/routing"):  # fmt: skip
        case("get", template, template)
    for template in ("/v2/models/{name}", "/v2/models/{name}/ready", "/v1/models/{name}"):
        for name in ("cancer", "nope"):
            case("get", template, template.replace("{name}", name))
    for template in ("/v2/models/{name}/versions/{version}",
                     "/v2/models/{name}/versions/{version}/ready"):  # fmt: skip
        for name, version in (("cancer", "1"), ("cancer", "9"), ("cancer", "x"), ("nope", "1")):
            case("get", template, template.format(name=name, version=version))
    infer_bad = {**v2, "inputs": v2["inputs"][:-1]}
    body_cases("post", "/v2/models/{name}/infer", "/v2/models/cancer/infer", v2, infer_bad)
    body_cases(
        "post",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/models/cancer/versions/1/infer",
        v2,
        infer_bad,
    )
    case("post", "/v2/models/{name}/versions/{version}/infer",
         "/v2/models/cancer/versions/9/infer", v2, **json_type)  # fmt: skip
    body_cases(
        "post",
        "/v1/models/{name}/predict",
        "/v1/models/cancer/predict",
        {"records": rows},
        {"records": [{"nope": 1}]},
    )
    body_cases(
        "post",
        "/v1/models/{name}/feedback",
        "/v1/models/cancer/feedback",
        {"request_id": "r-1", "label": 1},
        {"request_id": "r-1", "label": 7},
    )
    body_cases(
        "put",
        "/v1/admin/models/{name}/routing",
        "/v1/admin/models/cancer/routing",
        {"mode": "off"},
        {"mode": "canary", "challenger": 9, "share": 0.5},
    )
    case("post", "/v1/admin/reload", "/v1/admin/reload")

    with httpx.Client(timeout=60) as client:
        for method, template, path, headers, data in cases:
            for token in (admin, predict, {}, {"Authorization": "Bearer wrong-0123456789abcdef"}):
                r = client.request(method, server.url + path, content=data,
                                   headers={**headers, **token})  # fmt: skip
                seen.append((method, template, r.status_code, r))
        # a method a path does not list: 405, and the document does not list it either
        r = client.put(server.url + "/v2/models/cancer/infer", headers=admin)
        assert r.status_code == 405 and "put" not in doc["paths"]["/v2/models/{name}/infer"]

    for method, template, status, r in seen:
        declared = doc["paths"][template][method]["responses"]
        assert str(status) in declared, (method, template, status, r.text[:200])
        if status != 200 and template not in (
            "/v2/health/ready",
            "/v2/models/{name}/ready",
            "/v2/models/{name}/versions/{version}/ready",
        ):
            assert set(r.json()) == {"error"}, (method, template, status, r.text[:200])
            assert r.headers["content-type"].startswith("application/json")
        if status == 503:
            assert int(r.headers["retry-after"]) >= 1
        if template == "/metrics" and status == 200:
            assert r.headers["content-type"].startswith("text/plain")
    statuses = {status for _, _, status, _ in seen}
    assert statuses >= {200, 400, 401, 403, 404, 413, 415, 422}, statuses


def test_docs_page_makes_no_outside_request(guarded: tuple[Server, list]) -> None:
    server, _ = guarded
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.get(f"{server.url}/docs", timeout=60).status_code == 401  # behind auth too
    page = httpx.get(f"{server.url}/docs", headers=admin, timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""", html)
    urls = [a or b for a, b in urls]
    assert len(urls) >= 4, urls  # the script, the style sheet, the icon, the document
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png",
                ".json": "application/json"}  # fmt: skip
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert httpx.get(server.url + url, timeout=60).status_code == 401  # assets need auth
        r = httpx.get(server.url + url, headers=admin, timeout=60)
        assert r.status_code == 200, url
        kind = next(v for k, v in expected.items() if url.endswith(k))
        assert kind in r.headers["content-type"], (url, r.headers["content-type"])
        if url.endswith(".css"):  # images inline, fonts none: nothing fetched from outside
            assert re.findall(r"url\((?!\"?data:)", r.text) == []
    assert '"validatorUrl": null' in html  # Swagger UI's validator badge calls outside
    assert httpx.get(f"{server.url}/redoc", headers=admin, timeout=60).status_code == 404
