"""V2 model metadata and response encoding for the model server (no HTTP here).

:func:`v2_model_metadata` describes a model as Open Inference Protocol V2 tensors (one ``[-1]``
input per signature column, ``predict`` and, for classifiers, ``predict_proba``);
:func:`encode_v2` and :func:`encode_records` turn predictions into plain JSON values, with
non-finite floats as null.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from modelloop.models._dtypes import _MASKED_INTS, _NP_INTS

if TYPE_CHECKING:
    import numpy as np

    from modelloop.models import ColumnSpec, Signature

__all__ = [
    "binary_outputs",
    "encode_records",
    "encode_v2",
    "input_datatype",
    "output_names",
    "v2_datatype",
    "v2_model_metadata",
]

_V2_BY_DTYPE = {
    "bool": "BOOL",
    "boolean": "BOOL",
    "float32": "FP32",
    "Float32": "FP32",
    "float64": "FP64",
    "Float64": "FP64",
    **{name: name.upper() for name in (*_NP_INTS, *_MASKED_INTS)},
}


def v2_datatype(dtype: str) -> str:
    """The V2 datatype of a signature dtype (strings, categories and datetimes are BYTES)."""
    return _V2_BY_DTYPE.get(dtype, "BYTES")


def input_datatype(spec: ColumnSpec) -> str:
    """The V2 datatype of a column's input tensor, as the model metadata advertises it and
    inference requires it (a category of numbers takes theirs)."""
    if spec.dtype == "category":
        return _scalars_datatype(list(spec.categories or ())) if spec.categories else "BYTES"
    return v2_datatype(spec.dtype)


def _scalars_datatype(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds and kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def _is_classifier(signature: Signature | None) -> bool:
    if signature is None:
        return False
    return signature.task == "classification" or (
        signature.task is None and signature.classes is not None
    )


def output_names(signature: Signature | None) -> list[str]:
    """The V2 outputs a model gives: ``predict``, plus ``predict_proba`` for classifiers."""
    return ["predict", "predict_proba"] if _is_classifier(signature) else ["predict"]


def v2_model_metadata(
    name: str, versions: list[str], signature: Signature | None, platform: str = "modelloop"
) -> dict[str, Any]:
    """The V2 model metadata: one ``[-1]`` input tensor per column, then the outputs."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    if signature is not None:
        inputs = [
            {"name": spec.name, "datatype": input_datatype(spec), "shape": [-1]}
            for spec in signature.inputs
        ]
        outputs = [{"name": "predict", "datatype": _predict_datatype(signature), "shape": [-1]}]
        if _is_classifier(signature):
            k = len(signature.classes) if signature.classes is not None else -1
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, k]})
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }


def _predict_datatype(signature: Signature) -> str:
    if _is_classifier(signature) and signature.classes:
        return _scalars_datatype(list(signature.classes))
    if signature.outputs:
        return v2_datatype(signature.outputs[0].dtype)
    return "FP64"


def _json_values(values: np.ndarray) -> tuple[list[Any], str]:
    """Plain JSON values of a 1-D prediction array and their V2 datatype."""
    kind = values.dtype.kind
    if kind == "b":
        return values.tolist(), "BOOL"
    if kind in "iu":
        out = values.tolist()
        big = kind == "u" and bool(len(out)) and max(out) > 2**63 - 1
        return out, "UINT64" if big else "INT64"
    if kind == "f":
        return [v if v - v == 0.0 else None for v in values.tolist()], "FP64"
    if kind == "M":
        return values.astype(str).tolist(), "BYTES"
    items = values.tolist()
    datatype = _scalars_datatype(items)
    if datatype == "BYTES":
        items = [
            None if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in items
        ]
    elif datatype == "FP64":
        items = [float(v) if math.isfinite(v) else None for v in items]
    return items, datatype


def _proba_rows(proba: np.ndarray) -> list[list[Any]]:
    return [[v if v - v == 0.0 else None for v in row] for row in proba.tolist()]


def _classes(signature: Signature | None, k: int) -> list[Any] | None:
    if signature is not None and signature.classes is not None and len(signature.classes) == k:
        return list(signature.classes)
    return None


def encode_v2(
    model_name: str,
    model_version: str,
    request_id: str,
    prediction: np.ndarray,
    proba: np.ndarray | None,
    signature: Signature | None,
    outputs: list[str] | None,
) -> dict[str, Any]:
    """The V2 inference response: ``predict`` ``[n]`` and, for classifiers, ``predict_proba``.

    ``predict_proba`` is ``[n, k]`` FP64 in row-major order with ``parameters.classes``.
    ``outputs`` limits the answer to the requested names (None = all). Non-finite floats become
    null, which JSON can carry.
    """
    import numpy as np

    wanted = output_names(signature) if outputs is None else outputs
    tensors: list[dict[str, Any]] = []
    pred = np.asarray(prediction)
    if "predict" in wanted:
        data, datatype = _json_values(pred.reshape(-1))
        tensors.append(
            {"name": "predict", "datatype": datatype, "shape": [len(data)], "data": data}
        )
    if "predict_proba" in wanted and proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim == 1:
            p = p.reshape(-1, 1)
        tensor: dict[str, Any] = {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": list(p.shape),
            "data": [v if v - v == 0.0 else None for v in p.reshape(-1).tolist()],
        }
        classes = _classes(signature, p.shape[1])
        if classes is not None:
            tensor["parameters"] = {"classes": classes}
        tensors.append(tensor)
    return {
        "model_name": model_name,
        "model_version": str(model_version),
        "id": request_id,
        "outputs": tensors,
    }


_BINARY_DTYPES = {"BOOL": "?", "INT64": "<i8", "UINT64": "<u8", "FP64": "<f8"}


def binary_outputs(response: dict[str, Any], names: frozenset[str]) -> bytes:
    """Move the data of the outputs named in ``names`` out of an :func:`encode_v2` response,
    in place, as the V2 binary tensor extension has it: each such output loses ``data`` and
    gets ``parameters.binary_data_size``; the returned bytes are their data, in output order
    (numbers little-endian, null floats as NaN, BYTES elements 4-byte length-prefixed UTF-8)."""
    import numpy as np

    blobs: list[bytes] = []
    for tensor in response["outputs"]:
        if tensor["name"] not in names:
            continue
        data, datatype = tensor.pop("data"), tensor["datatype"]
        if datatype == "BYTES":
            parts = []
            for v in data:
                raw = b"" if v is None else str(v).encode()
                parts.append(len(raw).to_bytes(4, "little") + raw)
            blob = b"".join(parts)
        elif datatype == "FP64":
            blob = np.array([math.nan if v is None else v for v in data], "<f8").tobytes()
        else:
            blob = np.array(data, _BINARY_DTYPES[datatype]).tobytes()
        tensor.setdefault("parameters", {})["binary_data_size"] = len(blob)
        blobs.append(blob)
    return b"".join(blobs)


def encode_records(
    model_name: str,
    model_version: int,
    request_id: str,
    route: str,
    prediction: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any] | tuple[Any, ...] | None,
) -> dict[str, Any]:
    """The v1 answer: predictions, and for classifiers probabilities and their class order."""
    import numpy as np

    predictions, _ = _json_values(np.asarray(prediction).reshape(-1))
    out: dict[str, Any] = {
        "request_id": request_id,
        "model_name": model_name,
        "model_version": model_version,
        "route": route,
        "predictions": predictions,
    }
    if proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        out["probabilities"] = _proba_rows(p.reshape(len(predictions), -1))
    if classes is not None:
        out["classes"] = [v.item() if isinstance(v, np.generic) else v for v in classes]
    return out
