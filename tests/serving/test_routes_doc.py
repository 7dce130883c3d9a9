"""The OpenAPI document of the server and the direct prediction routes' contract."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI

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
    for path in (
        "/v1/models/{name}/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        answer = doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["type"] == "object"
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
