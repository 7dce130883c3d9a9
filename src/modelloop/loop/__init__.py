"""The loop controller: what turns monitoring results into retrains, judged rollouts and
promotions or rollbacks, with no person in between.

This package owns the loop policy (``loop:`` in ``modelloop.yaml``, or a file of its own: what
triggers a retrain, what data it trains on, the gate against the champion, the rollout steps and
the judge) and the judge that compares a challenger with the champion on the same period's
labelled outcomes. It depends on the store, monitoring and the pipeline through narrow functions,
and is called by the client and the CLI, never the other way round.
"""

from __future__ import annotations

from modelloop.loop._judge import GuardStats, Verdict, judge_errors, judge_losses, judge_step
from modelloop.loop._policy import (
    CanaryStep,
    JudgeSpec,
    LoopPolicy,
    RolloutSpec,
    TrainingSpec,
    TriggerSpec,
    load_policy,
    parse_policy,
)

__all__ = [
    "CanaryStep",
    "GuardStats",
    "JudgeSpec",
    "LoopPolicy",
    "RolloutSpec",
    "TrainingSpec",
    "TriggerSpec",
    "Verdict",
    "judge_errors",
    "judge_losses",
    "judge_step",
    "load_policy",
    "parse_policy",
]
