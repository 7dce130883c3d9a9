"""The model versions a monitoring window holds, each judged against its own reference.

After a retrain the prediction log holds rows of several versions (the old champion's traffic,
then the new one's, or a canary beside the champion). Their outputs and live metrics are only
comparable with the version that produced them, so a run keeps one :class:`VersionWindow` per
served version: its row count, the drift of its outputs against its own reference profile, the
quality of those outputs, and the live metrics of its labelled rows.

The loop controller reads them with :func:`version_metrics` (the latest stored run of a model) or
from :attr:`MonitorResult.versions` of a run it made itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._quality import QualityReport
from modelloop.monitoring._result import DriftResult, _num

if TYPE_CHECKING:
    from modelloop.store import Store

__all__ = ["VersionWindow", "describe_versions", "version_metrics"]


@dataclass(frozen=True)
class VersionWindow:
    """One model version's share of a monitoring window.

    ``rows`` are the served rows the version answered; ``prediction_drift`` compares its outputs
    with its own reference profile (None when it has no profile: ``note`` says why);
    ``output_quality`` checks those outputs against the same profile; ``labelled`` rows had a
    label, and ``metrics`` are the live metrics computed from them alone (empty when none).
    """

    version: int
    rows: int
    prediction_drift: DriftResult | None = None
    output_quality: QualityReport | None = None
    labelled: int = 0
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "prediction_drift": self.prediction_drift.to_dict() if self.prediction_drift else None,
            "output_quality": self.output_quality.to_dict() if self.output_quality else None,
            "labelled": self.labelled,
            "metrics": {k: _num(v) for k, v in self.metrics.items()},
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VersionWindow:
        try:
            drift, quality = d.get("prediction_drift"), d.get("output_quality")
            return cls(
                version=int(d["version"]),
                rows=int(d["rows"]),
                prediction_drift=DriftResult.from_dict(drift) if drift else None,
                output_quality=QualityReport.from_dict(quality) if quality else None,
                labelled=int(d.get("labelled", 0)),
                metrics=dict(d.get("metrics") or {}),
                note=str(d.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed version window: {exc!r}") from exc


def describe_versions(versions: Iterable[VersionWindow]) -> str:
    """``v2 (20,001 rows), v4 (100 rows)``: the versions of a window for titles and messages."""
    parts = [f"v{v.version} ({v.rows:,} rows)" for v in versions]
    return ", ".join(parts) or "no versions"


def version_metrics(store: Store, model: str) -> dict[int, VersionWindow]:
    """Per served version, what the latest stored monitoring run of ``model`` found: rows, live
    metrics of its own labelled rows (``.metrics``, ``.labelled``) and the drift of its outputs
    against its own reference (``.prediction_drift``).

    Empty when the model has no stored run, or its latest run was stored before results held
    versions. This is the entry point of the retraining loop.
    """
    records = store.list_monitoring_results(model, limit=1)
    if not records:
        return {}
    raw = records[-1].payload.get("versions") or []
    return {w.version: w for w in (VersionWindow.from_dict(d) for d in raw)}
