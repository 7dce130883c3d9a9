"""The model card of a registered version, in the order a reviewer of the change reads it: what
it predicts and the verdict of its gates, how it compares with the champion it was gated
against, its metrics overall, per segment and for fairness, what drives it, the data it was
trained on, its signature, its ONNX form and its lineage.

Every number comes from what the registry and the pipeline stored (see ``_facts``); the
comparison is :func:`~modelloop.registry._diff.compare_facts`. The card is one dictionary
(:meth:`ModelCard.to_dict`) rendered as Markdown (for a pull-request comment or a wiki) or as
one self-contained HTML page (no script, no stylesheet or font from elsewhere).
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import NotFound

if TYPE_CHECKING:
    from modelloop._client import Client
    from modelloop.registry._facts import VersionFacts

__all__ = ["ModelCard", "build_card", "diff_markdown", "write_card"]

_log = logging.getLogger("modelloop.registry.card")
_TOP_FEATURES = 10


@dataclass(frozen=True)
class ModelCard:
    """A version's card: ``data`` (JSON-ready, every figure as stored) and its renderings."""

    data: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The card's content as a JSON-ready dictionary."""
        return dict(self.data)

    def to_markdown(self) -> str:
        """The card as Markdown."""
        return _Markdown().render(_sections(self.data), self.data["title"])

    def to_html(self) -> str:
        """The card as one self-contained HTML page."""
        return _Html().render(_sections(self.data), self.data["title"])

    def write(self, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``card.md`` and ``card.html`` into ``folder`` (made if missing); return their
        paths."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        md, page = out / "card.md", out / "card.html"
        md.write_text(self.to_markdown(), encoding="utf-8")
        page.write_text(self.to_html(), encoding="utf-8")
        return md, page


# -- gathering -------------------------------------------------------------------------------------


def _top_features(explanation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not explanation:
        return []
    imp = explanation.get("global_importance") or {}
    ranked = sorted(imp.items(), key=lambda kv: -abs(kv[1] or 0.0))[:_TOP_FEATURES]
    return [{"feature": k, "importance": v} for k, v in ranked]


_STEP_ORDER = ("load", "validate", "split", "tune", "train", "evaluate", "explain", "gate")


def _step_order(step: str) -> int:
    return _STEP_ORDER.index(step) if step in _STEP_ORDER else len(_STEP_ORDER)


def _lineage(facts: VersionFacts) -> dict[str, Any]:
    from modelloop._client import DATASET_TAG, PACKAGE_TAG

    mv = facts.version
    return {
        "source": mv.source,
        "train_run": mv.run_id,
        "pipeline": mv.tags.get("modelloop.pipeline"),
        "pipeline_run": facts.pipeline_run_id,
        "steps": {
            step: {"run": r.run_id, "cached_from": r.tags.get("modelloop.cached_from")}
            for step, r in sorted(facts.step_runs.items(), key=lambda kv: _step_order(kv[0]))
        },
        "package_digest": mv.tags.get(PACKAGE_TAG),
        "dataset_digest": mv.tags.get(DATASET_TAG),
        "model_class": facts.metadata.get("model_class"),
        "libraries": dict(facts.metadata.get("libraries") or {}),
        "params": dict(facts.run.params) if facts.run else {},
    }


def _champion(facts: VersionFacts) -> tuple[str, int] | None:
    champ = (facts.gates or {}).get("champion")
    if not champ:
        return None
    return str(champ["name"]), int(champ["version"])


def build_card(client: Client, name: str, version: int, *, compare: bool = True) -> ModelCard:
    """The card of ``name`` version ``version`` (``NotFound`` if there is none). With
    ``compare``, the comparison with the champion it was gated against is computed (both
    versions scored on its test split)."""
    from modelloop.registry._diff import compare_facts, training_data
    from modelloop.registry._facts import version_facts

    facts = version_facts(client, name, version)
    mv = facts.version
    notes = list(facts.notes)
    comparison = None
    champion = _champion(facts)
    if compare and champion is not None:
        try:
            comparison = compare_facts(client, version_facts(client, *champion), facts).to_dict()
        except NotFound as exc:
            notes.append(f"the champion {champion[0]} v{champion[1]} is gone: {exc}")
    ev = facts.evaluation or {}
    spec = facts.spec or {}
    sig = facts.signature
    gates = facts.gates
    split = dict(spec.get("split") or {})
    data = {
        "title": f"{mv.name} v{mv.version}",
        "model": {
            "name": mv.name,
            "version": mv.version,
            "aliases": list(mv.aliases),
            "created_at": mv.created_at,
            "user": mv.user,
            "description": mv.description,
        },
        "predicts": {
            "target": facts.target,
            "task": facts.task,
            "classes": list(sig.classes) if sig and sig.classes is not None else None,
            "features": sig.columns if sig else list(spec.get("features") or []),
        },
        "gates": None
        if gates is None
        else {
            "passed": gates.get("passed"),
            "results": list(gates.get("results") or []),
            "champion": gates.get("champion"),
        },
        "comparison": comparison,
        "metrics": {
            "test_rows": ev.get("n_rows"),
            "primary": ev.get("primary_metric"),
            "values": dict(ev.get("metrics") or {}),
        },
        "segments": {
            "columns": {k: list(v) for k, v in (ev.get("segments") or {}).items()},
            "gaps": dict(ev.get("segment_gaps") or {}),
        },
        "fairness": {
            "sensitive": list((spec.get("evaluation") or {}).get("sensitive") or []),
            "values": dict(ev.get("fairness") or {}),
        },
        "explanation": None
        if not facts.outputs.get("explanation")
        else {
            "method": facts.outputs["explanation"].get("method"),
            "explainer": facts.outputs["explanation"].get("explainer"),
            "output": facts.outputs["explanation"].get("output"),
            "rows": facts.outputs["explanation"].get("n_rows"),
            "top_features": _top_features(facts.outputs["explanation"]),
        },
        "training_data": {
            **training_data(facts),
            "test_rows": ev.get("n_rows"),
            "split": split or None,
            "validation": facts.outputs.get("validation"),
        },
        "signature": None
        if sig is None
        else {"inputs": [c.to_dict() for c in sig.inputs], "outputs": len(sig.outputs)},
        "onnx": None
        if facts.onnx is None
        else {
            "attached": True,
            "onnx_sha256": facts.onnx.get("onnx_sha256"),
            "check_rows": facts.onnx.get("check_rows"),
            "libraries": dict(facts.onnx.get("libraries") or {}),
        },
        "lineage": _lineage(facts),
        "notes": notes,
    }
    from modelloop.pipeline._steps import jsonable

    return ModelCard(jsonable(data))


def write_card(client: Client, name: str, version: int, folder: str | os.PathLike[str]) -> bool:
    """Write ``card.md`` and ``card.html`` of a version into ``folder`` (the register step's
    outputs, so they are kept with the step run). The version exists by now: a card that cannot
    be built is logged, never an error of the registration; returns whether it was written."""
    try:
        build_card(client, name, version).write(folder)
    except Exception as exc:  # the registration stands without its card
        _log.warning("no model card for %s v%s: %s: %s", name, version, type(exc).__name__, exc)
        return False
    return True


def diff_markdown(diff: Mapping[str, Any]) -> str:
    """A comparison (``ModelDiff.to_dict()``) as Markdown."""
    title = f"{diff['b']} compared with {diff['a']}"
    return _Markdown().render([("Comparison", _comparison_blocks(diff))], title, heading="")


# -- sections, rendered twice ----------------------------------------------------------------

#: A section: (title, blocks); a block is a paragraph (str) or a table (headers, rows).
_Table = tuple[Sequence[str], Sequence[Sequence[Any]]]
_Block = str | _Table
_Section = tuple[str, list[_Block]]


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a card: 4 significant digits, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def _signed(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}"


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _comparison_blocks(cmp: Mapping[str, Any]) -> list[_Block]:
    blocks: list[_Block] = []
    td = cmp.get("test_data") or {}
    if td:
        shared = "the same rows both were evaluated on" if td.get("shared") else "its rows"
        blocks.append(
            f"{cmp['a']} → {cmp['b']}, both scored on the test split of {td.get('from')} "
            f"({td.get('rows')} rows; {shared}). Intervals are 95%."
        )
    if cmp.get("metrics"):
        rows = [
            [
                m["metric"],
                fmt(m["a"]),
                fmt(m["b"]),
                _signed(m["delta"]),
                "-" if m["low"] is None else f"[{m['low']:+.4g}, {m['high']:+.4g}]",
                m["method"] or "-",
                m["verdict"],
            ]
            for m in cmp["metrics"]
        ]
        blocks.append((["metric", cmp["a"], cmp["b"], "Δ", "95% interval", "method", ""], rows))
    lat = cmp.get("latency")
    if lat:
        blocks.append(
            f"p95 latency: {fmt(lat.get('a'))} ms → {fmt(lat.get('b'))} ms ({lat.get('how')})."
        )
    moved = [s for s in cmp.get("segments") or [] if s.get("delta") is not None]
    if moved:
        moved = sorted(moved, key=lambda s: -abs(s["delta"]))[:10]
        rows = [
            [
                f"{s['column']}={s['value']}",
                s["rows"],
                s["metric"],
                fmt(s["a"]),
                fmt(s["b"]),
                _signed(s["delta"]),
            ]
            for s in moved
        ]
        blocks.append("Segments that moved most:")
        blocks.append((["segment", "rows", "metric", cmp["a"], cmp["b"], "Δ"], rows))
    changes = cmp.get("signature") or []
    if changes:
        breaking = [c for c in changes if c["breaking"]]
        head = (
            f"**BREAKING signature change** ({len(breaking)} of {len(changes)} changes): "
            "callers must change their requests."
            if breaking
            else "Signature changes (none breaking):"
        )
        blocks.append(head)
        rows = [
            [
                c["column"],
                c["change"],
                c["a"] or "-",
                c["b"] or "-",
                "BREAKING" if c["breaking"] else "compatible",
                c["reason"],
            ]
            for c in changes
        ]
        blocks.append((["column", "change", cmp["a"], cmp["b"], "", "why"], rows))
    else:
        blocks.append("Signature: unchanged.")
    for key, title in (("dependencies", "Dependencies"), ("params", "Parameters")):
        items = cmp.get(key) or []
        if items:
            blocks.append(f"{title} that changed:")
            rows = [[v["name"], fmt(v["a"]), fmt(v["b"])] for v in items]
            blocks.append(([key[:-1] if key == "params" else "library", cmp["a"], cmp["b"]], rows))
        else:
            blocks.append(f"{title}: unchanged.")
    tda, tdb = (cmp.get("training_data") or {}).get("a"), (cmp.get("training_data") or {}).get("b")
    if tda and tdb:
        same = tda.get("digest") == tdb.get("digest")
        blocks.append(
            "Training data: the same dataset."
            if same
            else f"Training data: {fmt(tda.get('rows'))} → {fmt(tdb.get('rows'))} rows "
            f"(digest {str(tda.get('digest'))[:12]} → {str(tdb.get('digest'))[:12]})."
        )
    blocks.extend(f"Note: {n}" for n in cmp.get("notes") or [])
    return blocks


def _sections(d: Mapping[str, Any]) -> list[_Section]:
    out: list[_Section] = []
    m, p = d["model"], d["predicts"]
    summary: list[_Block] = []
    what = f"Predicts **{p['target'] or '?'}** ({p['task'] or 'task unknown'}"
    if p.get("classes") is not None:
        what += f"; classes {', '.join(map(str, p['classes']))}"
    summary.append(what + f") from {len(p['features'])} features: {', '.join(p['features'])}.")
    gates = d.get("gates")
    if gates is not None:
        verdict = "every gate passed" if gates["passed"] else "a gate FAILED"
        summary.append(f"Verdict: {verdict}.")
    aliases = ", ".join(f"@{a}" for a in m["aliases"]) or "none"
    summary.append(
        f"Registered {_when(m['created_at'])} by {m['user']}; aliases: {aliases}."
        + (f" Description: {m['description']}." if m.get("description") else "")
    )
    out.append(("Summary", summary))

    if gates is not None:
        champ = gates.get("champion")
        against = f"{champ['name']} v{champ['version']}" if champ else "no champion (first version)"
        rows = [
            [
                g.get("expr"),
                fmt(g.get("value")),
                fmt(g.get("bound")),
                "passed" if g.get("passed") else "FAILED",
                g.get("reason", ""),
            ]
            for g in gates["results"]
        ]
        out.append(
            (
                "Gates",
                [f"Gated against: {against}.", (["gate", "value", "bound", "", "reason"], rows)],
            )
        )
    cmp = d.get("comparison")
    if cmp is not None:
        out.append((f"Compared with the champion {cmp['a']}", _comparison_blocks(cmp)))
    elif gates is not None and gates.get("champion") is None:
        out.append(("Compared with the champion", ["No champion: this is the first version."]))

    met = d["metrics"]
    if met["values"]:
        rows = [[k, fmt(v)] for k, v in sorted(met["values"].items())]
        out.append(
            (
                "Metrics",
                [
                    f"On {fmt(met['test_rows'])} test rows (primary metric: {met['primary']}).",
                    (["metric", "value"], rows),
                ],
            )
        )
    seg = d["segments"]
    if seg["columns"]:
        blocks: list[_Block] = []
        for col, rows_ in seg["columns"].items():
            keys = [k for k in ("auc", "accuracy", "rmse", "mae") if any(k in r for r in rows_)]
            rows = [[r["value"], r["n"], *(fmt(r.get(k)) for k in keys)] for r in rows_]
            blocks.append(f"By {col} (gap of the primary metric: {fmt(seg['gaps'].get(col))}):")
            blocks.append(([col, "rows", *keys], rows))
        out.append(("Metrics per segment", blocks))
    fair = d["fairness"]
    if fair["values"]:
        rows = [[col, k, fmt(v)] for col, vals in fair["values"].items() for k, v in vals.items()]
        out.append(("Fairness", [(["sensitive column", "metric", "value"], rows)]))
    else:
        out.append(("Fairness", ["No sensitive columns declared (evaluation.sensitive)."]))
    ex = d.get("explanation")
    if ex:
        rows = [[f["feature"], fmt(f["importance"])] for f in ex["top_features"]]
        out.append(
            (
                "Top features",
                [
                    f"Mean |SHAP| of the {ex['output']} on {fmt(ex['rows'])} test rows "
                    f"({ex['explainer']}).",
                    (["feature", "importance"], rows),
                ],
            )
        )
    td = d["training_data"]
    lines: list[_Block] = []
    if td.get("digest"):
        lines.append(
            f"Dataset {td.get('name', '')} sha256 {td['digest']}: {fmt(td.get('rows'))} "
            f"training rows, {fmt(td.get('test_rows'))} test rows."
        )
    if td.get("from") is not None:
        lines.append(f"Time span ({td['time_column']}): {td['from']} to {td['to']}.")
    if td.get("split"):
        s = td["split"]
        how = f"by time on {s.get('column')}" if s.get("method") == "time" else "at random"
        lines.append(f"Split {how}" + (f", cutoff {s['cutoff']}." if s.get("cutoff") else "."))
    val = td.get("validation")
    if val is not None:
        report = val.get("report")
        lines.append(
            "Data validation: no reference schema (first version or same data)."
            if report is None
            else f"Data validation against {val.get('reference')}: "
            f"{len(report.get('violations') or [])} violation(s)."
        )
    out.append(("Training data", lines or ["Not recorded."]))
    sig = d.get("signature")
    if sig:
        rows = [
            [
                c["name"],
                c["dtype"],
                "yes" if c["nullable"] or c["allow_nan"] else "no",
                "-"
                if c["categories"] is None
                else f"{len(c['categories'])} ({c['unseen']} unseen)",
            ]
            for c in sig["inputs"]
        ]
        out.append(("Signature", [(["column", "dtype", "missing allowed", "categories"], rows)]))
    onnx = d.get("onnx")
    out.append(
        (
            "ONNX form",
            [
                f"Attached: onnx sha256 {onnx['onnx_sha256']}, agrees with scikit-learn on "
                f"{fmt(onnx['check_rows'])} check rows; served with onnxruntime"
                + (
                    f" (converted by skl2onnx {v})."
                    if (v := onnx["libraries"].get("skl2onnx"))
                    else "."
                )
                if onnx
                else "None: served with scikit-learn (`modelloop models convert` attaches one)."
            ],
        )
    )
    lin = d["lineage"]
    rows = [
        ["source", lin["source"]],
        ["pipeline", f"{lin['pipeline'] or '-'} (run {lin['pipeline_run'] or '-'})"],
        ["package sha256", lin["package_digest"] or "-"],
        ["training dataset sha256", lin["dataset_digest"] or "-"],
        ["model class", lin["model_class"] or "-"],
        *[["param " + k, v] for k, v in sorted(lin["params"].items())],
        *[[k, v or "-"] for k, v in sorted(lin["libraries"].items())],
        *[
            [f"step {k}", v["run"] + (f" (cached from {c})" if (c := v["cached_from"]) else "")]
            for k, v in lin["steps"].items()
        ],
    ]
    out.append(("Lineage", [(["", ""], rows)]))
    if d.get("notes"):
        out.append(("Notes", list(d["notes"])))
    return out


class _Markdown:
    @staticmethod
    def _cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    def render(self, sections: list[_Section], title: str, heading: str = "Model card: ") -> str:
        lines = [f"# {heading}{title}", ""]
        for name, blocks in sections:
            lines += [f"## {name}", ""]
            for b in blocks:
                if isinstance(b, str):
                    lines += [b, ""]
                else:
                    head, rows = b
                    lines.append("| " + " | ".join(self._cell(h) for h in head) + " |")
                    lines.append("|" + "---|" * len(head))
                    lines += ["| " + " | ".join(self._cell(c) for c in r) + " |" for r in rows]
                    lines.append("")
        return "\n".join(lines)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:70em;
color:#1f2328;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;
border-bottom:1px solid #d0d7de;padding-bottom:.2em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}.bad{color:#b42318;font-weight:600}.good{color:#1a7f37}
"""


class _Html:
    @staticmethod
    def _inline(text: str) -> str:
        out = html.escape(text)
        parts = out.split("**")  # **bold** as written for Markdown
        return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))

    @staticmethod
    def _cell(v: Any) -> str:
        text = html.escape(str(v))
        if text in ("FAILED", "BREAKING", "worse"):
            return f'<td class="bad">{text}</td>'
        if text in ("passed", "better"):
            return f'<td class="good">{text}</td>'
        return f"<td>{text}</td>"

    def render(self, sections: list[_Section], title: str) -> str:
        body = [f"<h1>Model card: {html.escape(title)}</h1>"]
        for name, blocks in sections:
            body.append(f"<h2>{html.escape(name)}</h2>")
            for b in blocks:
                if isinstance(b, str):
                    body.append(f"<p>{self._inline(b)}</p>")
                else:
                    head, rows = b
                    body.append("<table><tr>")
                    body.append("".join(f"<th>{html.escape(str(h))}</th>" for h in head))
                    body.append("</tr>")
                    for r in rows:
                        body.append("<tr>" + "".join(self._cell(c) for c in r) + "</tr>")
                    body.append("</table>")
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Model card: {html.escape(title)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )
