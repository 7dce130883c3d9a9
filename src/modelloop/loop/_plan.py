"""The small vocabulary the controller's parts share: a planned transition, a wait, the tags
the loop sets on versions, and time in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTOR", "ATTEMPT_TAG", "OUTCOME_TAG", "Plan", "Wait", "fmt", "ms"]

#: Version tag naming the retrain attempt that produced it: a restarted controller finds the
#: version its crashed predecessor registered instead of training another.
ATTEMPT_TAG = "modelloop.loop.attempt"
#: Version tag set when the loop ends a rollout: ``promoted`` or ``rolled back: <reason>``.
OUTCOME_TAG = "modelloop.loop.outcome"
#: Who the loop's alias moves and tags are recorded as, in the audit trail.
ACTOR = "modelloop-loop"


def ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass
class Plan:
    """One transition: the effect to apply first (idempotent), then the new state and its event."""

    state: str
    data: dict[str, Any]
    kind: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    effect: Callable[[], None] | None = None


@dataclass
class Wait:
    """Nothing to change now; ``message`` says why (recorded once while it stays the same)."""

    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    record: bool = False


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
