"""Two versions compared for review: what a reviewer of a model change reads, in that order —
metric deltas with 95% intervals on one shared test split, the segments that moved, signature
changes (a breaking one called out), then dependency, parameter and training-data changes.

Both versions are scored on the same rows: the test split the pipeline recorded for the newer
version ``b`` (else for ``a``), with the pipeline's own evaluation, so each number equals the one
the pipeline stored for the version that was evaluated on that split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._evaluate import finite_or_none
from modelloop.registry._stats import (
    HIGHER_IS_BETTER,
    Interval,
    delong_auc_difference,
    paired_bootstrap,
)

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.models import ColumnSpec, Signature
    from modelloop.registry._facts import VersionFacts

__all__ = [
    "ColumnChange",
    "MetricChange",
    "ModelDiff",
    "SegmentChange",
    "ValueChange",
    "candidate_comparison",
    "compare_facts",
    "diff_versions",
    "signature_changes",
]

LATENCY = "p95_latency_ms"


@dataclass(frozen=True)
class MetricChange:
    """One metric of ``a`` and ``b`` on the shared rows, ``b - a`` and its 95% interval.

    ``verdict`` is ``better``, ``worse`` (the interval excludes 0), ``no clear change`` (it
    includes 0) or ``no interval`` (none computed for this metric)."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None
    low: float | None = None
    high: float | None = None
    method: str | None = None
    verdict: str = "no interval"


@dataclass(frozen=True)
class SegmentChange:
    """The primary metric of one segment value under ``a`` and ``b``."""

    column: str
    value: Any
    rows: int
    metric: str
    a: float | None
    b: float | None
    delta: float | None


@dataclass(frozen=True)
class ColumnChange:
    """A change of one input column, output column or the classes; ``breaking`` when input
    ``a`` accepted may be refused by ``b``, or ``b``'s output differs in form."""

    column: str
    change: str  # added | removed | retyped | nullability | categories | output | classes | task
    a: str | None
    b: str | None
    breaking: bool
    reason: str


@dataclass(frozen=True)
class ValueChange:
    """A named value (a library version, a parameter) that differs between the versions."""

    name: str
    a: Any
    b: Any


@dataclass(frozen=True)
class ModelDiff:
    """The comparison of version ``b`` with version ``a`` (see the module doc)."""

    a: str
    b: str
    test_data: Mapping[str, Any]
    metrics: tuple[MetricChange, ...]
    segments: tuple[SegmentChange, ...]
    signature: tuple[ColumnChange, ...]
    dependencies: tuple[ValueChange, ...]
    params: tuple[ValueChange, ...]
    training_data: Mapping[str, Any]
    latency: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def breaking(self) -> bool:
        """Whether any signature change is breaking."""
        return any(c.breaking for c in self.signature)

    def metric(self, name: str) -> MetricChange:
        """The change of one metric (``KeyError`` if it was not compared)."""
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        from modelloop.pipeline._steps import jsonable

        out: dict[str, Any] = jsonable(self)
        out["breaking"] = self.breaking
        return out


def diff_versions(client: Client, a: tuple[str, int], b: tuple[str, int]) -> ModelDiff:
    """Compare version ``b`` (name, number) with version ``a``."""
    from modelloop.registry._facts import version_facts

    return compare_facts(client, version_facts(client, *a), version_facts(client, *b))


# -- metrics on the shared split ------------------------------------------------------------------


@dataclass
class _Scored:
    evaluation: dict[str, Any]
    pred: np.ndarray
    proba: np.ndarray | None
    classes: list[Any]


def _score(
    client: Client, facts: VersionFacts, test: pd.DataFrame, spec: Mapping[str, Any], task: str
) -> _Scored:
    from modelloop.pipeline._evaluate import evaluate

    package = client.load_model(facts.uri)
    columns = package.signature.columns if package.signature else list(spec.get("features") or [])
    missing = [c for c in columns if c not in test.columns]
    if missing:
        raise InvalidInput(f"{facts.label} needs columns the test split lacks: {missing}")
    ev = spec.get("evaluation") or {}
    segments, sensitive = list(ev.get("segments") or []), list(ev.get("sensitive") or [])
    seg_cols = [c for c in dict.fromkeys([*segments, *sensitive]) if c in test.columns]
    X, y = test[columns], test[spec["target"]]
    evaluation, _ = evaluate(
        package.model,
        X,
        y,
        task=task,
        segment_frame=test[seg_cols] if seg_cols else None,
        segments=[c for c in segments if c in test.columns],
        sensitive=[c for c in sensitive if c in test.columns],
        min_segment_rows=int(ev.get("min_segment_rows", 30)),
        latency_repeats=1,  # latency is compared from the gate step's paired timing
    )
    model = package.model
    pred = np.asarray(model.predict(X))
    proba = None
    classes: list[Any] = []
    if evaluation.task != "regression":
        classes = list(getattr(model, "classes_", np.unique(np.asarray(y))))
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X), dtype="float64")
    return _Scored(evaluation.to_dict(), pred, proba, classes)


def _verdict(metric: str, interval: Interval | None) -> str:
    if interval is None:
        return "no interval"
    direction = HIGHER_IS_BETTER.get(metric)
    if interval.low > 0 or interval.high < 0:
        if direction is None:
            return "higher" if interval.low > 0 else "lower"
        up = interval.low > 0
        return "better" if up == direction else "worse"
    return "no clear change"


def _metric_changes(sa: _Scored, sb: _Scored, y: np.ndarray) -> list[MetricChange]:
    ma, mb = sa.evaluation["metrics"], sb.evaluation["metrics"]
    kind = sb.evaluation["task"]
    same_classes = sa.classes == sb.classes
    intervals: dict[str, Interval] = {}
    if same_classes:
        boot = paired_bootstrap(kind, y, (sa.pred, sa.proba), (sb.pred, sb.proba), sb.classes)
        intervals |= {k: iv for k, (_, iv) in boot.items()}
        if kind == "binary" and sa.proba is not None and sb.proba is not None:
            done = delong_auc_difference(y == sb.classes[1], sa.proba[:, 1], sb.proba[:, 1])
            if done is not None:
                intervals["auc"] = done[1]
    primary = sb.evaluation.get("primary_metric")
    names = [k for k in ma if k in mb and k != LATENCY]
    order = list(HIGHER_IS_BETTER)
    names.sort(key=lambda k: (k != primary, order.index(k) if k in order else len(order), k))
    out = []
    for k in names:
        a, b = finite_or_none(ma[k]), finite_or_none(mb[k])
        iv = intervals.get(k)
        out.append(
            MetricChange(
                metric=k,
                a=a,
                b=b,
                delta=None if a is None or b is None else b - a,
                low=iv.low if iv else None,
                high=iv.high if iv else None,
                method=iv.method if iv else None,
                verdict=_verdict(k, iv),
            )
        )
    return out


def _segment_changes(sa: _Scored, sb: _Scored) -> list[SegmentChange]:
    metric = sb.evaluation.get("primary_metric") or "auc"
    better_up = HIGHER_IS_BETTER.get(metric, True)
    out = []
    for column, rows_b in sb.evaluation.get("segments", {}).items():
        by_value = {str(r["value"]): r for r in sa.evaluation.get("segments", {}).get(column, [])}
        for rb in rows_b:
            ra = by_value.get(str(rb["value"]), {})
            a, b = finite_or_none(ra.get(metric)), finite_or_none(rb.get(metric))
            out.append(
                SegmentChange(
                    column,
                    rb["value"],
                    int(rb["n"]),
                    metric,
                    a,
                    b,
                    None if a is None or b is None else b - a,
                )
            )

    def worst_first(c: SegmentChange) -> tuple[str, bool, float]:
        d = c.delta if c.delta is not None else 0.0
        return (c.column, c.delta is None, d if better_up else -d)

    return sorted(out, key=worst_first)


def _latency(fa: VersionFacts, fb: VersionFacts) -> dict[str, Any] | None:
    gates = fb.gates or {}
    champion = gates.get("champion") or {}
    paired = gates.get("paired_p95_latency_ms")
    if (
        paired
        and champion.get("name") == fa.version.name
        and (champion.get("version") == fa.version.version)
    ):
        return {
            "a": paired.get("champion"),
            "b": paired.get("candidate"),
            "how": f"timed interleaved under the same load in the gate step of {fb.label}",
        }
    la = (fa.evaluation or {}).get("metrics", {}).get(LATENCY)
    lb = (fb.evaluation or {}).get("metrics", {}).get(LATENCY)
    if la is None and lb is None:
        return None
    return {"a": la, "b": lb, "how": "each measured apart, in its own pipeline run"}


# -- signature ----------------------------------------------------------------------------------

_INT_BITS = {f"{p}int{b}": b for p in ("", "u") for b in (8, 16, 32, 64)}
_NULLABLE = {
    **{f"int{b}": f"Int{b}" for b in (8, 16, 32, 64)},
    **{f"uint{b}": f"UInt{b}" for b in (8, 16, 32, 64)},
    "float32": "Float32",
    "float64": "Float64",
    "bool": "boolean",
}


def _widens(a: str, b: str) -> bool:
    """Whether every value of dtype ``a`` is a value of dtype ``b`` (a safe retype)."""
    base_b = {v: k for k, v in _NULLABLE.items()}.get(b, b)
    base_a = {v: k for k, v in _NULLABLE.items()}.get(a, a)
    if a in _NULLABLE.values() and b not in _NULLABLE.values():
        return False  # a nullable column becomes one that refuses missing values
    if base_a == base_b:
        return True
    if base_a in _INT_BITS and base_b in _INT_BITS:
        signed_a, signed_b = not base_a.startswith("u"), not base_b.startswith("u")
        if signed_a == signed_b:
            return _INT_BITS[base_b] >= _INT_BITS[base_a]
        return not signed_a and signed_b and _INT_BITS[base_b] > _INT_BITS[base_a]
    if base_a in _INT_BITS and base_b == "float64":
        return _INT_BITS[base_a] <= 32
    return base_a == "float32" and base_b == "float64"


def _describe(c: ColumnSpec) -> str:
    text = c.dtype + (" nullable" if c.missing_allowed else "")
    if c.categories is not None:
        text += f", {len(c.categories)} categories ({c.unseen} unseen)"
    return text


def _column_changes(ca: ColumnSpec, cb: ColumnSpec) -> list[ColumnChange]:
    out = []
    name = cb.name
    if ca.dtype != cb.dtype:
        safe = _widens(ca.dtype, cb.dtype)
        out.append(
            ColumnChange(
                name,
                "retyped",
                ca.dtype,
                cb.dtype,
                not safe,
                f"{ca.dtype} → {cb.dtype}: "
                + (
                    "every value of the old type still fits"
                    if safe
                    else "values the old version accepted may be refused"
                ),
            )
        )
    if ca.missing_allowed and not cb.missing_allowed:
        out.append(
            ColumnChange(
                name,
                "nullability",
                "missing allowed",
                "missing refused",
                True,
                "a missing value the old version accepted is now refused",
            )
        )
    elif cb.missing_allowed and not ca.missing_allowed:
        out.append(
            ColumnChange(
                name,
                "nullability",
                "missing refused",
                "missing allowed",
                False,
                "missing values are now accepted",
            )
        )
    cats_a, cats_b = set(ca.categories or ()), set(cb.categories or ())
    if ca.categories != cb.categories or ca.unseen != cb.unseen:
        if cb.refuses_unseen and (not ca.refuses_unseen or not cats_a <= cats_b):
            dropped = sorted(map(str, cats_a - cats_b))
            reason = (
                f"values {dropped[:10]} are now refused"
                if dropped and ca.refuses_unseen
                else "values outside the new categories are now refused"
            )
            out.append(ColumnChange(name, "categories", _describe(ca), _describe(cb), True, reason))
        else:
            added, gone = sorted(map(str, cats_b - cats_a)), sorted(map(str, cats_a - cats_b))
            out.append(
                ColumnChange(
                    name,
                    "categories",
                    _describe(ca),
                    _describe(cb),
                    False,
                    f"{len(added)} known value(s) added, {len(gone)} no longer known; "
                    "unknown values are still accepted",
                )
            )
    return out


def signature_changes(sa: Signature | None, sb: Signature | None) -> list[ColumnChange]:
    """Every input, output, class and task change from signature ``sa`` to ``sb``. A request
    must name exactly the signature's input columns, so an added or a removed input column is
    breaking, as is a retype that is not a widening."""
    if sa is None or sb is None:
        if sa is sb:
            return []
        which = "the old" if sa is None else "the new"
        return [ColumnChange("*", "signature", None, None, True, f"{which} version has none")]
    out: list[ColumnChange] = []
    ia, ib = {c.name: c for c in sa.inputs}, {c.name: c for c in sb.inputs}
    for name, c in ib.items():
        if name not in ia:
            out.append(
                ColumnChange(
                    name,
                    "added",
                    None,
                    _describe(c),
                    True,
                    "a new required input column: requests without it are refused",
                )
            )
    for name, c in ia.items():
        if name not in ib:
            out.append(
                ColumnChange(
                    name,
                    "removed",
                    _describe(c),
                    None,
                    True,
                    "requests that still send it are refused (unexpected column)",
                )
            )
        else:
            out.extend(_column_changes(c, ib[name]))
    oa, ob = {c.name: c for c in sa.outputs}, {c.name: c for c in sb.outputs}
    for name in sorted(set(oa) | set(ob)):
        if name not in oa or name not in ob or oa[name].dtype != ob[name].dtype:
            a = _describe(oa[name]) if name in oa else None
            b = _describe(ob[name]) if name in ob else None
            out.append(ColumnChange(name, "output", a, b, True, "the prediction changed form"))
    if sa.classes != sb.classes:
        out.append(
            ColumnChange(
                "classes",
                "classes",
                str(list(sa.classes or [])),
                str(list(sb.classes or [])),
                True,
                "probability columns and labels differ",
            )
        )
    if sa.task != sb.task:
        out.append(ColumnChange("task", "task", sa.task, sb.task, True, "the task changed"))
    return out


# -- the comparison --------------------------------------------------------------------------------


def _value_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[ValueChange]:
    return [
        ValueChange(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def training_data(facts: VersionFacts) -> dict[str, Any]:
    """The training dataset of a version: name, digest, rows and time span (when the pipeline
    split by a time column)."""
    ds = facts.dataset
    if ds is None:
        return {"digest": facts.version.tags.get("modelloop.dataset_digest")}
    out: dict[str, Any] = {"name": ds.name, "digest": ds.digest, "rows": ds.num_rows}
    split = (facts.spec or {}).get("split") or {}
    column = split.get("column")
    profile = (ds.profile or {}).get("columns", {}).get(column or "", {})
    if column and "min" in profile:
        out["time_column"] = column
        out["from"], out["to"] = profile.get("min"), profile.get("max")
    return out


def _columns(facts: VersionFacts) -> set[str]:
    if facts.signature is not None:
        return set(facts.signature.columns)
    return set((facts.spec or {}).get("features") or [])


def _shared_split(
    client: Client, fa: VersionFacts, fb: VersionFacts
) -> tuple[VersionFacts, pd.DataFrame] | str:
    """The recorded test split both versions can be scored on: ``b``'s, else ``a``'s (one
    holding every column either model needs); or why there is none."""
    tried = []
    for source in (fb, fa):
        if source.spec is None or "split" not in source.step_runs:
            continue
        test = source.test_split(client)
        if test is None:
            continue
        need = _columns(fa) | _columns(fb) | {source.spec.get("target")}
        missing = sorted(str(c) for c in need - set(test.columns))
        if not missing:
            return source, test
        tried.append(f"the test split of {source.label} lacks {missing}")
    if not tried:
        return "neither version has a test split recorded by a pipeline: metrics not compared"
    return "metrics not compared: " + "; ".join(tried)


def compare_facts(client: Client, fa: VersionFacts, fb: VersionFacts) -> ModelDiff:
    """Compare two versions from their gathered facts (see :func:`diff_versions`)."""
    notes: list[str] = []
    metrics: list[MetricChange] = []
    segments: list[SegmentChange] = []
    test_data: dict[str, Any] = {}
    found = _shared_split(client, fa, fb)
    if isinstance(found, str):
        notes.append(found)
    else:
        source, test = found
        assert source.spec is not None
        task = source.task or "classification"
        digest = source.test_split_digest(client)
        other = fa if source is fb else fb
        test_data = {
            "from": source.label,
            "split_run": source.step_runs["split"].run_id,
            "digest": digest,
            "rows": len(test),
            "shared": other.test_split_digest(client) == digest,
        }
        try:
            sa = _score(client, fa, test, source.spec, task)
            sb = _score(client, fb, test, source.spec, task)
        except InvalidInput as exc:
            notes.append(f"metrics not compared: {exc}")
        else:
            y = np.asarray(test[source.spec["target"]])
            metrics = _metric_changes(sa, sb, y)
            segments = _segment_changes(sa, sb)
    libs_a = dict(fa.metadata.get("libraries") or {})
    libs_b = dict(fb.metadata.get("libraries") or {})
    libs_a["model class"] = fa.metadata.get("model_class")
    libs_b["model class"] = fb.metadata.get("model_class")
    params_a = dict(fa.run.params) if fa.run else {}
    params_b = dict(fb.run.params) if fb.run else {}
    return ModelDiff(
        a=fa.label,
        b=fb.label,
        test_data=test_data,
        metrics=tuple(metrics),
        segments=tuple(segments),
        signature=tuple(signature_changes(fa.signature, fb.signature)),
        dependencies=tuple(_value_changes(libs_a, libs_b)),
        params=tuple(_value_changes(params_a, params_b)),
        training_data={"a": training_data(fa), "b": training_data(fb)},
        latency=_latency(fa, fb),
        notes=tuple(notes),
    )


def candidate_comparison(client: Client, pipeline_run_id: str) -> ModelDiff | None:
    """The model a pipeline run trained compared with the champion its gates compared it with
    (None when there was no champion): what a reviewer of a change that failed a gate reads."""
    from modelloop.registry._facts import candidate_facts, version_facts

    candidate = candidate_facts(client, pipeline_run_id)
    champion = (candidate.gates or {}).get("champion")
    if not champion:
        return None
    return compare_facts(
        client, version_facts(client, str(champion["name"]), int(champion["version"])), candidate
    )
