"""The rollout half of the controller: stages through the server (or the ``challenger`` alias),
each judged on its own period's labelled outcomes, then promotion or rollback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import NotFound, ServiceUnavailable
from modelloop.loop._judge import GuardStats, Verdict, judge_errors, judge_losses, judge_step
from modelloop.loop._plan import ACTOR, OUTCOME_TAG, Plan, Wait, ms
from modelloop.loop._policy import CanaryStep, LoopPolicy

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.loop._server import ServerLink
    from modelloop.store import LoopState, Store

__all__ = ["RolloutMixin"]


class RolloutMixin:
    """Stages, the judge, promotion and rollback; mixed into
    :class:`~modelloop.loop._controller.Controller`, whose attributes it reads."""

    model: str
    store: Store
    policy: LoopPolicy
    home: Path
    server: ServerLink | None
    clock: Callable[[], int]

    def _champion(self) -> int | None:
        try:
            return self.store.get_version_by_alias(self.model, "champion").version
        except NotFound:
            return None

    # -- rollout -----------------------------------------------------------------------------

    def _stages(self) -> list[CanaryStep]:
        return self.policy.stages()

    def _apply_routing(self, challenger: int, stage: CanaryStep) -> Callable[[], None]:
        def effect() -> None:
            self.store.set_alias(self.model, "challenger", challenger, actor=ACTOR)
            if self.server is not None:
                self.server.set_routing(
                    self.model,
                    mode=stage.mode,
                    challenger=f"{self.model}/{challenger}",
                    share=stage.share,
                )

        return effect

    def _enter_stage(
        self, data: dict[str, Any], index: int, evidence: dict[str, Any]
    ) -> Plan | Wait:
        stages = self._stages()
        challenger = int(data["challenger"])
        stage = stages[index]
        counters: dict[str, Any] = {}
        if self.server is not None:
            try:
                counters = {
                    route: c.to_dict() for route, c in self.server.counters(self.model).items()
                }
            except ServiceUnavailable as exc:
                return Wait(f"waiting to start stage {index + 1}: {exc}", record=True)
        now = self.clock()
        what = "shadow" if stage.mode == "shadow" else f"canary {stage.share:.0%}"
        return Plan(
            "rollout",
            {
                "memo": data.get("memo", {}),
                "attempt": data.get("attempt"),
                "challenger": challenger,
                "stage": index,
                "mode": stage.mode,
                "share": stage.share,
                "started_at": now,
                "deadline": now + ms(stage.max_duration_s),
                "waits": 0,
                "counters": counters,
            },
            "stage",
            f"stage {index + 1}/{len(stages)}: v{challenger} {what}",
            {**evidence, "stage": index + 1, "mode": stage.mode, "share": stage.share},
            effect=self._apply_routing(challenger, stage),
        )

    def _rollout(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        data = dict(state.data)
        stages = self._stages()
        index = int(data["stage"])
        stage = stages[min(index, len(stages) - 1)]
        challenger = int(data["challenger"])
        now = self.clock()
        started = int(data["started_at"])
        restored = self._check_routing(challenger, stage)
        if isinstance(restored, Wait):
            return restored
        if now - started < ms(stage.min_duration_s):
            return Wait(
                f"stage {index + 1}: {(started + ms(stage.min_duration_s) - now) / 1000:.0f} s "
                "left of its minimum duration"
            )
        verdict = self._judge(data, stage, challenger, started, now)
        if isinstance(verdict, Wait):
            return verdict
        evidence = {"stage": index + 1, "judge": verdict.to_dict()}
        if verdict.outcome == "fail":
            return self._to_rollback(
                data, challenger, f"stage {index + 1}: {verdict.reason}", evidence, stage=index
            )
        if verdict.outcome == "pass":
            if index + 1 < len(stages):
                return self._enter_stage(data, index + 1, evidence)
            if self.policy.rollout.needs_approval("promote"):
                # the last stage's routing holds while a person decides
                return self._await_approval(
                    {**data, "judge": evidence}, challenger, "promote", evidence
                )
            return Plan(
                "promoting",
                {"memo": data.get("memo", {}), "challenger": challenger, "judge": evidence},
                "judge",
                f"stage {index + 1}: passed ({verdict.reason}); promoting v{challenger}",
                evidence,
            )
        # inconclusive
        if now < int(data["deadline"]):
            return Wait(f"stage {index + 1}: inconclusive so far ({verdict.reason})")
        judge = self.policy.judge
        waits = int(data.get("waits", 0))
        if judge.inconclusive == "wait" and waits < judge.max_waits:
            return Plan(
                "rollout",
                {
                    **data,
                    "waits": waits + 1,
                    "deadline": now + ms(stage.max_duration_s),
                },
                "inconclusive",
                f"stage {index + 1}: inconclusive at its time limit ({verdict.reason}); "
                f"waiting once more ({waits + 1} of {judge.max_waits})",
                {**evidence, "policy": "wait"},
            )
        return self._to_rollback(
            data,
            challenger,
            f"stage {index + 1}: inconclusive at its time limit ({verdict.reason}); the policy "
            "rolls back",
            {**evidence, "policy": judge.inconclusive, "inconclusive": True},
            stage=index,
        )

    def _check_routing(self, challenger: int, stage: CanaryStep) -> Wait | None:
        """A server that restarted forgot the routing: put it back (or wait while it is down)."""
        if self.server is None:
            return None
        try:
            routing = self.server.routing(self.model)
            current = routing.get("challenger") or {}
            if (
                routing.get("mode") != stage.mode
                or current.get("version") != challenger
                or abs(float(routing.get("share") or 0.0) - stage.share) > 1e-9
            ):
                self._apply_routing(challenger, stage)()
                self.store.add_loop_event(
                    self.model,
                    kind="routing",
                    state="rollout",
                    message=f"routing restored: v{challenger} {stage.mode} {stage.share:g}",
                    evidence={"found": routing},
                    now=self.clock(),
                )
        except ServiceUnavailable as exc:
            return Wait(f"waiting: {exc}", record=True)
        return None

    def _judge(
        self, data: dict[str, Any], stage: CanaryStep, challenger: int, started: int, now: int
    ) -> Verdict | Wait:
        from modelloop.loop._evidence import labelled_rows
        from modelloop.loop._server import RouteCounters, guard_stats

        champion = self._champion()
        task = self._task(challenger)
        rows = labelled_rows(self.home, self.model, since_ms=started, until_ms=now, routes=None)
        ch_route = "shadow" if stage.mode == "shadow" else "canary"
        if len(rows):
            versions = rows["model_version"]
            ch_rows = rows[(rows["route"] == ch_route) & (versions == challenger)]
            cp_rows = rows[(rows["route"] == "champion") & (versions == champion)]
        else:
            ch_rows = cp_rows = rows
        judge = self.policy.judge
        verdict = _verdict(ch_rows, cp_rows, task, judge.alpha, judge.margin, stage.min_outcomes)
        ch_guard: GuardStats | None = None
        cp_guard: GuardStats | None = None
        if self.server is not None:
            try:
                after = self.server.counters(self.model)
            except ServiceUnavailable as exc:
                return Wait(f"waiting to judge: {exc}", record=True)
            before = {r: RouteCounters.from_dict(c) for r, c in data.get("counters", {}).items()}
            ch_guard = guard_stats(before.get(ch_route), after.get(ch_route))
            cp_guard = guard_stats(before.get("champion"), after.get("champion"))
        return judge_step(
            verdict,
            ch_guard,
            cp_guard,
            max_p99_latency_ratio=judge.max_p99_latency_ratio,
            max_error_rate=judge.max_error_rate,
        )

    def _task(self, version: int) -> str:
        from modelloop.monitoring._reference import TASK_TAG

        tags = self.store.get_model_version(self.model, version).tags
        return "regression" if tags.get(TASK_TAG) == "regression" else "classification"

    # -- waiting for a person ----------------------------------------------------------------

    def _await_approval(
        self, data: dict[str, Any], challenger: int, point: str, evidence: dict[str, Any]
    ) -> Plan:
        """Stop in ``awaiting_approval`` with what a person needs to decide (the gate's or the
        judge's evidence), until ``modelloop loop approve`` or ``reject`` (or the timeout)."""
        now = self.clock()
        timeout = self.policy.rollout.approval_timeout_s
        before = "its rollout" if point == "rollout" else "its promotion to champion"
        return Plan(
            "awaiting_approval",
            {
                **data,
                "challenger": challenger,
                "approval": point,
                "requested_at": now,
                "expires_at": None if timeout is None else now + ms(timeout),
                "evidence": evidence,
            },
            "approval",
            f"v{challenger} awaits approval before {before}: modelloop loop approve|reject "
            f"{self.model}",
            {**evidence, "approval": point, "timeout_s": timeout},
        )

    def _awaiting(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        data = dict(state.data)
        challenger = int(data["challenger"])
        expires = data.get("expires_at")
        if expires is not None and self.clock() >= int(expires):
            reason = (
                f"no approval within {self.policy.rollout.approval_timeout_s or 0:g} s "
                f"before its {data.get('approval')}"
            )
            return Plan(
                "rolling_back",
                {"memo": data.get("memo", {}), "challenger": challenger, "reason": reason},
                "reject",
                f"rolling back v{challenger}: {reason}",
                {"user": None, "reason": reason, "challenger": challenger, "timeout": True},
            )
        if data.get("approval") == "promote" and "stage" in data:
            # the last stage's routing holds while a person decides (put back after a restart)
            stages = self._stages()
            held = self._check_routing(challenger, stages[min(int(data["stage"]), len(stages) - 1)])
            if isinstance(held, Wait):
                return held
        return Wait(f"v{challenger} awaits approval before its {data.get('approval')}")

    def _approved(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        data = dict(state.data)
        challenger = int(data["challenger"])
        approved = data.get("approved") or {}
        evidence = {**dict(data.get("evidence") or {}), "approved_by": approved.get("by")}
        if data.get("approval") == "rollout":
            keep = {"memo": data.get("memo", {}), "attempt": data.get("attempt")}
            return self._enter_stage({**keep, "challenger": challenger}, 0, evidence)
        return Plan(
            "promoting",
            {"memo": data.get("memo", {}), "challenger": challenger, "judge": data.get("judge")},
            "judge",
            f"approved by {approved.get('by')}; promoting v{challenger}",
            evidence,
        )

    # -- the end of a rollout ----------------------------------------------------------------

    def _to_rollback(
        self,
        data: dict[str, Any],
        challenger: int,
        reason: str,
        evidence: dict[str, Any],
        *,
        stage: int | None,
    ) -> Plan:
        return Plan(
            "rolling_back",
            {"memo": data.get("memo", {}), "challenger": challenger, "reason": reason},
            "judge" if stage is not None else "gate",
            f"rolling back v{challenger}: {reason}",
            evidence,
        )

    def _promoting(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        challenger = int(state.data["challenger"])

        def effect() -> None:
            self.store.set_alias(self.model, "champion", challenger, actor=ACTOR)
            if self.server is not None:
                self.server.set_routing(self.model, mode="off")
                self.server.reload()
            self._drop_challenger_alias(challenger)
            self.store.set_model_version_tags(
                self.model, challenger, {OUTCOME_TAG: "promoted"}, actor=ACTOR
            )

        return Plan(
            "promoted",
            {"memo": state.data.get("memo", {}), "champion": challenger},
            "promote",
            f"v{challenger} is champion",
            {"version": challenger, "judge": state.data.get("judge")},
            effect=effect,
        )

    def _rolling_back(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        challenger = int(state.data["challenger"])
        reason = str(state.data.get("reason", ""))

        def effect() -> None:
            if self.server is not None:
                self.server.set_routing(self.model, mode="off")
            self._drop_challenger_alias(challenger)
            self.store.set_model_version_tags(
                self.model, challenger, {OUTCOME_TAG: f"rolled back: {reason}"[:500]}, actor=ACTOR
            )

        return Plan(
            "rolled_back",
            {"memo": state.data.get("memo", {}), "rolled_back": challenger},
            "rollback",
            f"v{challenger} rolled back: traffic 0, alias challenger removed",
            {"version": challenger, "reason": reason},
            effect=effect,
        )

    def _drop_challenger_alias(self, challenger: int) -> None:
        try:
            if self.store.get_version_by_alias(self.model, "challenger").version == challenger:
                self.store.delete_alias(self.model, "challenger", actor=ACTOR)
        except NotFound:
            pass


def _verdict(
    ch: pd.DataFrame, cp: pd.DataFrame, task: str, alpha: float, margin: float, min_n: int
) -> Verdict:
    from modelloop.loop._evidence import route_outcomes

    outcomes_ch = route_outcomes(ch, task=task)
    outcomes_cp = route_outcomes(cp, task=task)
    o_ch = next(iter(outcomes_ch.values()), None)
    o_cp = next(iter(outcomes_cp.values()), None)
    if task == "regression":
        import numpy as np

        empty = np.array([], dtype=float)
        losses_ch = o_ch.losses if o_ch is not None and o_ch.losses is not None else empty
        losses_cp = o_cp.losses if o_cp is not None and o_cp.losses is not None else empty
        return judge_losses(losses_ch, losses_cp, alpha=alpha, margin=margin, min_outcomes=min_n)
    return judge_errors(
        o_ch.errors or 0 if o_ch else 0,
        o_ch.labelled if o_ch else 0,
        o_cp.errors or 0 if o_cp else 0,
        o_cp.labelled if o_cp else 0,
        alpha=alpha,
        margin=margin,
        min_outcomes=min_n,
    )
