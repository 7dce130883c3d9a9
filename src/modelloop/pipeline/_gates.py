"""Promotion gates: absolute thresholds and comparisons with the current champion.

A gate is one expression ``<metric> <op> <bound>`` where ``<op>`` is one of ``>= <= > <`` and
``<bound>`` is a number, or ``champion`` optionally followed by ``+ x``, ``- x`` or ``* x``::

    auc >= 0.70
    segment_gap <= 0.10
    p95_latency_ms <= 20
    auc >= champion - 0.005
    rmse <= champion * 1.05

Outcomes: a metric the candidate has no value for fails the gate (the reason lists the metrics
that exist); a champion gate with no champion yet passes ("no champion yet"), as does one whose
champion has no value for that metric (the reason says so). A gate naming a metric the pipeline
never reports is refused when the file is read (see ``_spec.metric_problems``), not after
training. ``p95_latency_ms`` is CPU time; a gate comparing it with the champion's uses both
models timed interleaved in the gate step, so the load of the machine cancels out.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._evaluate import finite_or_none

__all__ = ["Gate", "GateResult", "evaluate_gates", "parse_gate"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_GATE = re.compile(
    rf"""^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*
    (?P<op>>=|<=|>|<)\s*
    (?:
        (?P<number>{_NUMBER})
      | champion\s*(?:(?P<sign>[-+*])\s*(?P<amount>{_NUMBER}))?
    )\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Gate:
    """A parsed gate. For a champion gate the bound is ``champion * scale + offset``."""

    expr: str
    metric: str
    op: str
    threshold: float | None
    against_champion: bool
    offset: float
    scale: float = 1.0


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: the candidate's value, the bound it was held to, and why."""

    expr: str
    metric: str
    value: float | None
    bound: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_gate(expr: str) -> Gate:
    """Parse ``expr``; ``InvalidInput`` naming the expression when it is malformed."""
    if not isinstance(expr, str):
        raise InvalidInput(f"gate {expr!r} must be a string such as 'auc >= 0.70'")
    m = _GATE.match(expr)
    if m is None:
        raise InvalidInput(
            f"gate {expr!r} is malformed: expected '<metric> <op> <number>' or "
            "'<metric> <op> champion [+|-|* <number>]' with <op> one of >=, <=, >, < "
            "(e.g. 'auc >= 0.70', 'auc >= champion - 0.005')"
        )
    metric, op = m["metric"], m["op"]
    if m["number"] is not None:
        threshold = float(m["number"])
        if not math.isfinite(threshold):
            raise InvalidInput(f"gate {expr!r}: the threshold must be a finite number")
        return Gate(expr.strip(), metric, op, threshold, False, 0.0)
    offset, scale = 0.0, 1.0
    if m["sign"] is not None:
        amount = float(m["amount"])
        if m["sign"] == "*":
            scale = amount
        else:
            offset = amount if m["sign"] == "+" else -amount
    return Gate(expr.strip(), metric, op, None, True, offset, scale)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def evaluate_gates(
    gates: Sequence[Gate],
    metrics: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> list[GateResult]:
    """Check each gate against the candidate's ``metrics`` (and the ``champion``'s, measured on
    the same evaluation data); one result per gate, in order."""
    results = []
    available = ", ".join(sorted(k for k, v in metrics.items() if finite_or_none(v) is not None))
    for gate in gates:
        value = finite_or_none(metrics.get(gate.metric))
        if value is None:
            what = "has no value" if gate.metric not in metrics else "is not a finite number"
            results.append(
                GateResult(
                    gate.expr,
                    gate.metric,
                    None,
                    None,
                    False,
                    f"metric {gate.metric!r} {what} for the candidate; "
                    f"available metrics: {available or '(none)'}",
                )
            )
            continue
        if gate.against_champion:
            if champion is None:
                results.append(
                    GateResult(gate.expr, gate.metric, value, None, True, "no champion yet")
                )
                continue
            base = finite_or_none(champion.get(gate.metric))
            if base is None:
                results.append(
                    GateResult(
                        gate.expr,
                        gate.metric,
                        value,
                        None,
                        True,
                        f"the champion has no value for {gate.metric!r}; nothing to compare",
                    )
                )
                continue
            bound = base * gate.scale + gate.offset
            how = f"champion {_fmt(base)}"
            if gate.scale != 1.0:
                how += f" * {_fmt(gate.scale)}"
            if gate.offset:
                how += f" {'+' if gate.offset > 0 else '-'} {_fmt(abs(gate.offset))}"
            source = f" ({how})"
        else:
            assert gate.threshold is not None
            bound, source = gate.threshold, ""
        passed = _OPS[gate.op](value, bound)
        verdict = "passed" if passed else "failed"
        reason = (
            f"{gate.metric} = {_fmt(value)}, required {gate.op} {_fmt(bound)}{source}: {verdict}"
        )
        results.append(GateResult(gate.expr, gate.metric, value, bound, passed, reason))
    return results
