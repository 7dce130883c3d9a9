"""The server's OpenAPI document, as the server answers: every status an operation can give, the
``{"error": ...}`` body of every error, ``/metrics`` as Prometheus text, and the V2 request and
answer bodies (JSON, or the binary tensor extension).

FastAPI derives the paths from the routes; :data:`ANSWERS` adds what it cannot see, since the
handlers read and answer raw HTTP themselves. A documented operation missing from the table
fails the document, so a new route cannot go undeclared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ANSWERS", "install_openapi"]

_LOOKUP = (404, 500, 503)  # the model: not served here, startup failed, still loading
_BODY = (400, 413, 415, 422)  # the body: malformed, too large, not JSON, not the signature
_PREDICT = (*_BODY, *_LOOKUP)

#: The statuses besides 200 each operation can answer, by (method, path); with tokens every
#: operation also answers 401, and those under /v1/admin 403.
ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/v2"): (),
    ("get", "/v2/health/live"): (500,),
    ("get", "/v2/health/ready"): (400,),
    ("get", "/v2/models/{name}"): _LOOKUP,
    ("get", "/v2/models/{name}/versions/{version}"): _LOOKUP,
    ("get", "/v2/models/{name}/ready"): (400, *_LOOKUP),
    ("get", "/v2/models/{name}/versions/{version}/ready"): (400, *_LOOKUP),
    ("post", "/v2/models/{name}/infer"): _PREDICT,
    ("post", "/v2/models/{name}/versions/{version}/infer"): _PREDICT,
    ("post", "/v1/models/{name}/predict"): _PREDICT,
    ("post", "/v1/models/{name}/feedback"): _PREDICT,
    ("get", "/v1/models"): (),
    ("get", "/v1/models/{name}"): _LOOKUP,
    ("get", "/v1/admin/routing"): (),
    ("put", "/v1/admin/models/{name}/routing"): _PREDICT,
    ("post", "/v1/admin/reload"): (),
    ("get", "/metrics"): (),
}

_REASONS = {
    400: "The body is not valid JSON, not the shape this route takes, or a field is wrong.",
    401: "No bearer token, or not a valid one (`WWW-Authenticate` says which).",
    403: "The token's role may not call this route (admin routes need an admin token).",
    404: "No such model or version is served here.",
    413: "The body, or the body once inflated, is over the size limit, or has too many rows.",
    415: "The body is not JSON (nor, for V2 inference, the binary tensor extension), or its "
    "Content-Encoding is not gzip or deflate.",
    422: "The input does not fit the model signature (the message names the column and row), "
    "the model refused a value, or a challenger's package was refused.",
    500: "The server could not start, or the model failed on a valid input.",
    503: "The model's queue is full or the model is still loading (retry after `Retry-After` "
    "seconds), or the feedback store could not be written.",
}

_ERROR = {"$ref": "#/components/schemas/Error"}
_REFUSED = {
    "type": "object",
    "description": "A version an alias names that could not be loaded; the previous version "
    "still answers.",
    "properties": {
        "version": {"type": "integer"},
        "reason": {"type": "string"},
        "since": {"type": "number", "description": "Unix time of the refusal"},
    },
    "required": ["version", "reason", "since"],
}
_DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": _DATATYPES},
        "parameters": {"type": "object", "additionalProperties": True},
        "data": {"type": "array", "items": {}},
    },
    "required": ["name", "shape", "datatype"],
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "What is wrong, and how to fix it"}
        },
        "required": ["error"],
        "additionalProperties": False,
    },
    "Refused": _REFUSED,
    "Liveness": {
        "type": "object",
        "properties": {"live": {"type": "boolean"}, "error": {"type": "string"}},
        "required": ["live"],
    },
    "Readiness": {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "refused": {
                "type": "array",
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Refused"},
                        {
                            "type": "object",
                            "properties": {
                                "model": {"type": "string"},
                                "route": {"type": "string", "enum": ["champion", "challenger"]},
                            },
                        },
                    ]
                },
            },
        },
        "required": ["ready"],
    },
    "ModelReadiness": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "refused": {"type": "object", "additionalProperties": True},
        },
        "required": ["name", "ready"],
    },
    "V2Tensor": _TENSOR,
    "V2InferenceRequest": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "description": "Sticky canary routing key"},
                    "binary_data_output": {
                        "type": "boolean",
                        "description": "Answer every output as binary tensor data",
                    },
                },
                "additionalProperties": True,
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/V2Tensor"},
                "description": "One [n] tensor per signature column, in the datatype the model "
                "metadata gives, or one [n, columns] tensor",
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": ["predict", "predict_proba"]},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                    "required": ["name"],
                },
            },
        },
        "required": ["inputs"],
    },
    "V2InferenceResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
        },
        "required": ["model_name", "model_version", "id", "outputs"],
    },
}

_BINARY_NOTE = (
    "With the binary tensor extension: the JSON part, then the tensors' bytes; "
    "`Inference-Header-Content-Length` gives the JSON part's length."
)
V2_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/V2InferenceRequest"}},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "description": _BINARY_NOTE}
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_READY = {
    "200": _json(_ref("ModelReadiness"), "Ready (`refused` names an alias target not loaded)"),
    "400": _json(_ref("ModelReadiness"), "Not ready, or a version that was refused"),
}
_INFER_200 = {
    "description": "The predictions; as binary tensor data when an output asked for it.",
    "headers": {
        "Inference-Header-Content-Length": {
            "description": "Length of the JSON part (binary answers only)",
            "schema": {"type": "integer"},
        }
    },
    "content": {
        "application/json": {"schema": _ref("V2InferenceResponse")},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "description": _BINARY_NOTE}
        },
    },
}
#: Answers whose body is not an Error (or a 200 that FastAPI cannot describe).
_SPECIAL: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v2/health/live"): {
        "200": _json(_ref("Liveness"), "Live"),
        "500": _json(_ref("Liveness"), "Startup failed: restart or look at the log"),
    },
    ("get", "/v2/health/ready"): {
        "200": _json(_ref("Readiness"), "Ready (`refused` lists alias targets not loaded)"),
        "400": _json(_ref("Readiness"), "Not ready: loading or draining"),
    },
    ("get", "/v2/models/{name}/ready"): _READY,
    ("get", "/v2/models/{name}/versions/{version}/ready"): _READY,
    ("post", "/v2/models/{name}/infer"): {"200": _INFER_200},
    ("post", "/v2/models/{name}/versions/{version}/infer"): {"200": _INFER_200},
    ("get", "/metrics"): {
        "200": {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
}


def _error(status: int) -> dict[str, Any]:
    answer = _json(_ERROR, _REASONS[status])
    if status == 503:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait (queue full, model loading)",
                "schema": {"type": "integer"},
            }
        }
    elif status == 401:
        answer["headers"] = {
            "WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}
        }
    return answer


def statuses(method: str, path: str, *, auth: bool, admin_prefix: str = "/v1/admin") -> set[int]:
    """Every status the operation can answer (200 included)."""
    out = {200, *ANSWERS[(method, path)]}
    if auth:
        out.add(401)
        if path == admin_prefix or path.startswith(admin_prefix + "/"):
            out.add(403)
    return out


def amend(doc: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    """Make a document FastAPI generated for the server's routes say what the server does."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # never sent: see _app's handlers
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if (method, path) not in ANSWERS:
                raise RuntimeError(
                    f"{method.upper()} {path} has no entry in serving/_openapi.py ANSWERS; "
                    "declare the statuses it answers"
                )
            special = _SPECIAL.get((method, path), {})
            responses = {"200": special.get("200", operation["responses"]["200"])}
            for status in sorted(statuses(method, path, auth=auth) - {200}):
                responses[str(status)] = special.get(str(status)) or _error(status)
            operation["responses"] = responses
    return doc


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    """Have ``app`` serve the amended document at its ``openapi_url`` (built once)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = amend(doc, auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
