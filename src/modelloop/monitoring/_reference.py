"""Reference profiles of registered model versions: computed once, stored as a blob, tagged."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from modelloop.exceptions import NotFound
from modelloop.monitoring._drift import prediction_frame
from modelloop.monitoring._profile import ReferenceProfile

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.models import ModelPackage
    from modelloop.store import ModelVersion

__all__ = [
    "REFERENCE_TAG",
    "TASK_TAG",
    "load_reference",
    "profile_with_predictions",
    "reference_tags",
    "save_reference",
    "set_reference",
]

#: Version tag holding the sha256 of the reference profile blob in the artifact store.
REFERENCE_TAG = "modelloop.reference_profile"
#: Version tag holding "classification" or "regression".
TASK_TAG = "modelloop.task"


def profile_with_predictions(package: ModelPackage, data: pd.DataFrame) -> ReferenceProfile:
    """Profile the model's input columns plus its outputs (``prediction``, ``proba_<class>``)."""
    import pandas as pd

    inputs = package.signature.validate(data) if package.signature else data
    task = _task(package)
    preds = package.model.predict(inputs)
    proba = (
        package.model.predict_proba(inputs)
        if task == "classification" and hasattr(package.model, "predict_proba")
        else None
    )
    classes = list(getattr(package.model, "classes_", [])) or None
    outputs = prediction_frame(preds, proba, classes=classes, task=task)
    frame = pd.concat([inputs.reset_index(drop=True), outputs], axis=1)
    return ReferenceProfile.from_frame(frame)


def save_reference(client: Client, profile: ReferenceProfile) -> str:
    """Store a profile as a content-addressed JSON blob; return its digest."""
    data = json.dumps(profile.to_dict(), separators=(",", ":"), allow_nan=False).encode()
    return client.artifacts.put_bytes(data).digest


def reference_tags(client: Client, package: ModelPackage, data: pd.DataFrame) -> dict[str, str]:
    """Profile ``data`` through ``package``, store the profile, and return the version tags that
    point at it."""
    digest = save_reference(client, profile_with_predictions(package, data))
    return {REFERENCE_TAG: digest, TASK_TAG: _task(package)}


def set_reference(client: Client, name: str, version: int, data: pd.DataFrame) -> ModelVersion:
    """Compute and attach the reference profile of ``name/version`` from reference data
    (usually its training inputs): inputs and the model's own predictions."""
    package = client.load_model(f"models:/{name}/{version}")
    return client.store.set_model_version_tags(
        name, version, reference_tags(client, package, data), actor=client.settings.user
    )


def load_reference(client: Client, mv: ModelVersion) -> ReferenceProfile:
    """The reference profile attached to a version (``NotFound`` when it has none)."""
    digest = mv.tags.get(REFERENCE_TAG)
    if not digest:
        raise NotFound(
            f"model {mv.name} version {mv.version} has no reference profile; register it with "
            "reference_data=... or call set_reference"
        )
    return ReferenceProfile.from_dict(json.loads(client.artifacts.read_bytes(digest)))


def _task(package: ModelPackage) -> str:
    sig = package.signature
    if sig is not None and sig.task in ("classification", "regression"):
        return sig.task
    return "classification" if hasattr(package.model, "classes_") else "regression"
