"""The model package: an estimator saved safely with skops, its signature and its metadata.

``save_model`` writes a package directory; ``load_model`` reads it back, trusting only the types
modelloop's configuration allows, and returns a :class:`ModelPackage` whose predictions enforce
the :class:`Signature` inferred from the training data.
"""

from __future__ import annotations

from modelloop.models._package import (
    MODEL_LOCAL_TRUSTED_TYPES,
    ModelPackage,
    load_model,
    save_model,
)
from modelloop.models._signature import ColumnSpec, Signature, infer_signature

__all__ = [
    "MODEL_LOCAL_TRUSTED_TYPES",
    "ColumnSpec",
    "ModelPackage",
    "Signature",
    "infer_signature",
    "load_model",
    "save_model",
]
