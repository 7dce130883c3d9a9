"""Checks of generated Kubernetes manifests: the API schemas (kubernetes-validate), a vendored
schema of KEDA's ScaledObject, and how KEDA and the HPA would turn cron triggers into a replica
count at a given instant."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import kubernetes_validate.utils as kv

#: Kubernetes versions the manifests must be valid for (oldest supported by the manifests'
#: fields, and the newest kubernetes-validate knows).
K8S_VERSIONS = ("1.29.0", kv.latest_version() + ".0")
KEDA_SCHEMA = json.loads(
    (Path(__file__).parent / "keda_scaledobject.schema.json").read_text(encoding="utf-8")
)


def validate_k8s(manifest: dict[str, Any]) -> None:
    """Raise unless ``manifest`` is valid, strictly (no unknown field), for every version."""
    for version in K8S_VERSIONS:
        kv.validate(manifest, version, strict=True)


def validate_scaled_object(manifest: dict[str, Any]) -> None:
    """Raise unless ``manifest`` is a valid KEDA ScaledObject."""
    jsonschema.Draft202012Validator.check_schema(KEDA_SCHEMA)
    jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(manifest)


def validate_any(manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "ScaledObject":
        validate_scaled_object(manifest)
    else:
        validate_k8s(manifest)


def _next_fire(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The next time strictly after ``after`` that ``M H DOM MON *`` fires (what the manifests
    use: one minute of one day of the year)."""
    minute, hour, day, month, dow = expr.split()
    assert dow == "*", expr
    local = after.astimezone(tz)
    for year in (local.year, local.year + 1):
        at = datetime(year, int(month), int(day), int(hour), int(minute), tzinfo=tz)
        if at > local:
            return at.astimezone(UTC)
    raise AssertionError("unreachable")


def cron_active(trigger: dict[str, Any], at: datetime) -> bool:
    """KEDA's cron scaler: active when the window's next end comes before its next start."""
    meta = trigger["metadata"]
    tz = ZoneInfo(meta["timezone"])
    start = _next_fire(meta["start"], tz, at)
    end = _next_fire(meta["end"], tz, at)
    return not (start < end)


def keda_replicas(scaled_object: dict[str, Any], at: datetime) -> int:
    """Replicas the HPA that KEDA drives would settle on at ``at`` with no CPU load: the largest
    count any active cron trigger asks for, within min and max replica counts."""
    spec = scaled_object["spec"]
    counts = [
        int(t["metadata"]["desiredReplicas"])
        for t in spec["triggers"]
        if t["type"] == "cron" and cron_active(t, at)
    ]
    return min(spec["maxReplicaCount"], max([spec["minReplicaCount"], *counts]))


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {m["kind"]: m for m in manifests}
    assert len(out) == len(manifests)
    return out
