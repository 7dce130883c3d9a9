"""The verdict of a pipeline run in CI: what passed, what failed and why, in a few lines of the
build log and as Markdown for the build's report (and GitHub's job summary)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EXIT_MEANINGS", "Verdict", "read_verdict"]

#: What the pipeline's exit codes mean (see ``modelloop pipeline run --help``).
EXIT_MEANINGS = {
    0: "every gate passed",
    2: "the pipeline file or a --set value is invalid",
    7: "the artifact root cannot be written",
    10: "a gate failed: nothing was registered",
    11: "data validation found a hard violation: stopped before training",
}


@dataclass(frozen=True)
class Verdict:
    """A pipeline run's outcome for a CI log: ``ok``, one ``headline``, the ``reason`` it
    failed, and the run's result (None when the pipeline stopped before writing one)."""

    ok: bool
    exit_code: int
    headline: str
    reason: str | None
    result: Mapping[str, Any] | None

    @property
    def registered(self) -> tuple[str, int] | None:
        """(model name, version) the run registered, if any."""
        r = self.result or {}
        if r.get("registered_version") is None or not r.get("model_name"):
            return None
        return str(r["model_name"]), int(r["registered_version"])

    def to_markdown(self) -> str:
        """The verdict as Markdown: headline, reason, steps, metrics and gates."""
        lines = [f"## modelloop: {self.headline}", ""]
        if self.reason:
            lines += [f"**Reason:** {self.reason}", ""]
        r = self.result
        if r is None:
            return "\n".join(lines)
        steps = r.get("steps") or []
        cached = sum(1 for s in steps if s.get("cache_hit"))
        lines += [
            f"Pipeline {r.get('name')} run {r.get('run_id')}: {len(steps)} steps "
            f"({cached} from the cache) in {float(r.get('seconds') or 0):.1f} s.",
            "",
        ]
        metrics = r.get("metrics") or {}
        if metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
            lines.append("")
        gates = r.get("gates") or []
        if gates:
            lines += ["| gate | passed | reason |", "|---|---|---|"]
            for g in gates:
                ok = "passed" if g.get("passed") else "**FAILED**"
                lines.append(f"| `{g.get('expr')}` | {ok} | {g.get('reason', '')} |")
            lines.append("")
        for note in r.get("notes") or []:
            lines += [f"Note: {note}", ""]
        return "\n".join(lines)


def read_verdict(result_file: str | Path, exit_code: int) -> Verdict:
    """The verdict from ``modelloop pipeline run --json``'s output and its exit code."""
    path = Path(result_file)
    result: Mapping[str, Any] | None = None
    try:
        text = path.read_text(encoding="utf-8")
        loaded = json.loads(text) if text.strip() else None
        result = loaded if isinstance(loaded, Mapping) and "status" in loaded else None
    except (OSError, ValueError):
        result = None
    meaning = EXIT_MEANINGS.get(exit_code, "the pipeline failed")
    if result is None:
        return Verdict(
            ok=False,
            exit_code=exit_code,
            headline=f"the pipeline stopped (exit {exit_code}: {meaning})",
            reason=f"no result was written; the pipeline's error is in the log above ({path})",
            result=None,
        )
    name = result.get("name")
    status = result.get("status")
    if status == "registered" and exit_code == 0:
        alias = f" as @{result['alias']}" if result.get("alias") else ""
        headline = (
            f"{name}: every gate passed; registered {result.get('model_name')} "
            f"v{result.get('registered_version')}{alias}"
        )
        return Verdict(True, exit_code, headline, None, result)
    if status == "gates_passed" and exit_code == 0:
        return Verdict(True, exit_code, f"{name}: every gate passed", result.get("reason"), result)
    reason = result.get("reason") or meaning
    return Verdict(False, exit_code, f"{name}: {meaning} (exit {exit_code})", reason, result)
