"""A registered version's ONNX form: converted and checked once, stored beside the package.

:func:`convert_version` converts a version's package with skl2onnx in a child process, checks
the result against scikit-learn (on the caller's rows, else the package's input example, plus a
row per column that admits a missing value), and only when they agree stores the ONNX file and a
small description as content-addressed blobs in the artifact store and points the version's
``modelloop.onnx`` tag at the description. The description names the package digest it was made
from, so a form can never be served with another package.

A server (``modelloop serve``) then predicts that version with onnxruntime alone: scikit-learn
is not imported and the conversion does not happen at start. :func:`load_registered_onnx` reads
the form back, every digest verified.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import ArtifactCorrupted, InvalidInput

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.models import Signature
    from modelloop.models._onnx import OnnxPredictor
    from modelloop.store import ModelVersion

__all__ = [
    "ONNX_TAG",
    "OnnxConversion",
    "convert_version",
    "load_registered_onnx",
    "require_converter",
]

#: Version tag holding the sha256 of the ONNX form's description blob (empty: detached).
ONNX_TAG = "modelloop.onnx"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class OnnxConversion:
    """The outcome of :func:`convert_version`: ``converted`` is False when the model was declined,
    and ``reason`` says why."""

    name: str
    version: int
    converted: bool
    reason: str = ""
    onnx_sha256: str | None = None
    check_rows: int = 0
    seconds: float = 0.0


def convert_version(
    client: Client,
    uri: str,
    *,
    check_data: pd.DataFrame | None = None,
    max_check_rows: int = 10_000,
    timeout_s: float = 300,
) -> OnnxConversion:
    """Convert and check the version ``uri`` names (``models:/NAME/3``, ``NAME@champion``...),
    and on agreement attach the ONNX form to it.

    ``check_data`` must hold the signature's columns (others are ignored); more than
    ``max_check_rows`` rows are sampled down, reproducibly. Declining is not an error: the result
    says why. An ONNX form attached before is detached only when this check finds that it
    disagrees with scikit-learn (not when the conversion fails otherwise). ``InvalidInput`` when
    the check data lacks columns or the ``onnx`` extra is not installed.
    """
    from modelloop.models._onnx import convert_in_subprocess, read_meta
    from modelloop.models._package import read_signature
    from modelloop.registry._uri import parse_model_spec

    require_converter()
    start = time.perf_counter()
    mv = client.resolve(parse_model_spec(uri))
    folder = client.fetch_model(mv)
    signature = read_signature(folder)
    with tempfile.TemporaryDirectory(prefix="modelloop-onnx-") as tmp:
        check = None
        if check_data is not None:
            if signature is None:
                raise InvalidInput(f"{mv.name}/{mv.version} has no signature to check data by")
            check = Path(tmp) / "check.parquet"
            _check_rows(check_data, signature, max_check_rows).to_parquet(check)
        out = Path(tmp) / "model.onnx"
        reason, disagreed = convert_in_subprocess(
            folder,
            out,
            trusted_types=client.settings.trusted_types,
            check=check,
            timeout_s=timeout_s,
        )
        if reason:
            attached = mv.tags.get(ONNX_TAG)
            now = client.get_model_version(mv.name, mv.version).tags.get(ONNX_TAG)
            if disagreed and attached and now == attached:  # the attached form fails this check
                client.store.set_model_version_tags(
                    mv.name, mv.version, {ONNX_TAG: ""}, actor=client.settings.user
                )
                reason += " (the ONNX form attached before was removed)"
            return OnnxConversion(
                mv.name, mv.version, False, reason, seconds=time.perf_counter() - start
            )
        meta = read_meta(out)
        model = client.artifacts.put_file(out)
    description = {
        "format": _FORMAT,
        "onnx_sha256": model.digest,
        "package_digest": _package_digest(mv),
        **meta,
    }
    blob = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    digest = client.artifacts.put_bytes(blob).digest
    client.store.set_model_version_tags(
        mv.name, mv.version, {ONNX_TAG: digest}, actor=client.settings.user
    )
    return OnnxConversion(
        mv.name,
        mv.version,
        True,
        onnx_sha256=model.digest,
        check_rows=int(meta.get("check_rows", 0)),
        seconds=time.perf_counter() - start,
    )


def require_converter() -> None:
    """``InvalidInput`` naming the extra to install when skl2onnx or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("skl2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(
            f"converting to ONNX needs {', '.join(missing)}: pip install 'modelloop[onnx]'"
        )


def load_registered_onnx(
    client: Client, mv: ModelVersion, signature: Signature, *, intra_op_threads: int = 1
) -> OnnxPredictor | None:
    """The version's registered ONNX form as a predictor, or None when it has none.

    ``ArtifactCorrupted`` when the description is unreadable or was made from another package;
    a blob whose content does not match its digest fails in the artifact store's read.
    """
    from modelloop.models._onnx import predictor_from

    digest = mv.tags.get(ONNX_TAG)
    if not digest:
        return None
    where = f"the ONNX form of {mv.name}/{mv.version}"
    try:
        description: dict[str, Any] = json.loads(client.artifacts.read_bytes(digest))
        made_from, model = description["package_digest"], description["onnx_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactCorrupted(f"{where} has an unreadable description") from exc
    if description.get("format") != _FORMAT:
        raise ArtifactCorrupted(f"{where} has format {description.get('format')!r}")
    if made_from != _package_digest(mv):
        raise ArtifactCorrupted(f"{where} was made from another package ({made_from})")
    return predictor_from(
        client.artifacts.read_bytes(model), description, signature, intra_op_threads
    )


def _package_digest(mv: ModelVersion) -> str:
    from modelloop._client import PACKAGE_TAG

    return mv.tags.get(PACKAGE_TAG, "")


def _check_rows(data: pd.DataFrame, signature: Signature, limit: int) -> pd.DataFrame:
    """The signature's columns of ``data``, at most ``limit`` rows of it."""
    missing = [c for c in signature.columns if c not in data.columns]
    if missing:
        raise InvalidInput(f"the check data lacks the model's input columns {missing}")
    if len(data) == 0:
        raise InvalidInput("the check data has no rows")
    frame = data[signature.columns]
    if len(frame) > limit:
        frame = frame.sample(limit, random_state=0)
    return frame.reset_index(drop=True)
