"""The loop controller: one model's state machine, advanced one tick at a time.

States: ``idle`` (and the resting states ``promoted``, ``rolled_back``, ``failed``) watch the
triggers; ``retraining`` trains a challenger; ``gating`` compares it with the champion on the most
recent labelled window; ``rollout`` runs the policy's stages (shadow, canary steps), each judged on
the labelled outcomes of its own period; ``promoting`` and ``rolling_back`` apply the end. With a
policy that asks for a person (``rollout.approval``), ``awaiting_approval`` holds the challenger
after the gate and/or after its last stage until ``modelloop loop approve`` (``approved``, then
on) or ``reject`` (``rolling_back``). Any state can be paused (``modelloop loop pause``: a
``paused`` entry in the state's data); the controller then does nothing but say so once (see
``_operator``).

Crash safety: every transition is a compare-and-set on the state's revision, written with the
event that explains it. Side effects come before the transition that records them and are
idempotent (an alias set to the same version, routing set to the same share, a retrain found by
its attempt tag), so a controller killed anywhere redoes at most the effect of the step it was in,
never a second retrain or a second promotion. Only the holder of the model's lease acts.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelloop.exceptions import Conflict, InvalidInput, NotFound, ServiceUnavailable
from modelloop.loop._plan import ATTEMPT_TAG, OUTCOME_TAG, Plan, Wait, fmt, ms
from modelloop.loop._policy import REGRESSION_METRICS, LoopPolicy
from modelloop.loop._rollout import RolloutMixin

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.loop._server import ServerLink
    from modelloop.store import LoopEvent, LoopState, Store

__all__ = [
    "ATTEMPT_TAG",
    "OUTCOME_TAG",
    "WATCHING",
    "Controller",
    "LoopActions",
    "RetrainOutcome",
    "TickResult",
    "request_retrain",
    "retrain_data",
]

#: States in which the controller watches the triggers.
WATCHING = frozenset({"idle", "promoted", "rolled_back", "failed"})
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced: the registered version, or why there is none."""

    version: int | None
    status: str
    reason: str | None = None
    run_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


class LoopActions(Protocol):
    """What the controller needs beyond the store, given by its caller (the CLI wires a client)."""

    def retrain(
        self, *, attempt: str, data: Path | None, with_source: bool = False
    ) -> RetrainOutcome:
        """Train and register a challenger tagged ``ATTEMPT_TAG=attempt`` without moving
        ``champion``; ``data`` is a Parquet file of labelled served rows (None: the pipeline's
        own source alone), added to the pipeline's own source when ``with_source``."""

    def score(self, version: int, rows: pd.DataFrame, metric: str) -> float | None:
        """``metric`` of one version on labelled rows (column ``label``)."""


@dataclass(frozen=True)
class TickResult:
    """What one tick did (or, in a dry run, would do)."""

    model: str
    acted: bool
    state: str
    revision: int
    message: str
    events: tuple[LoopEvent, ...] = ()
    planned: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        from modelloop.loop._notify import event_dict

        return {
            "model": self.model,
            "acted": self.acted,
            "state": self.state,
            "revision": self.revision,
            "message": self.message,
            "events": [event_dict(e) for e in self.events],
            "planned": list(self.planned),
        }


def _fault(point: str, state: str) -> None:
    """Fault injection for crash tests: ``MODELLOOP_LOOP_FAULT=after-effect:promoting`` kills this
    process with SIGKILL right after that effect, before its transition is written."""
    if os.environ.get("MODELLOOP_LOOP_FAULT") == f"{point}:{state}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def retrain_data(model: str, state: LoopState, now: int, trigger: dict[str, Any]) -> dict[str, Any]:
    """The data of a ``retraining`` state entered at ``now`` from ``state`` by ``trigger``."""
    memo = dict(state.data.get("memo") or {})
    recent = [t for t in memo.get("retrain_times", []) if t > now - _DAY_MS]
    memo.update(retrain_times=[*recent, now], last_retrain_at=now)
    return {
        "memo": memo,
        "attempt": f"{model}:{state.revision + 1}",
        "trigger": trigger,
        "started_at": now,
    }


def request_retrain(
    store: Store, model: str, reason: str = "requested by hand", *, now: int | None = None
) -> LoopEvent:
    """Put ``model``'s loop into ``retraining`` now, cooldown notwithstanding (the controller
    carries the retrain through on its next tick); ``Conflict`` while a retrain or rollout is
    under way. The operator action behind ``modelloop loop retrain`` and the dashboard's."""
    from modelloop.store import LoopState

    found = store.get_loop_state(model)
    state = found if found is not None else LoopState(model, "idle", 0, {}, 0)
    if state.state not in WATCHING:
        raise Conflict(
            f"the loop of {model} is busy ({state.state}); a retrain can start once it "
            "is idle again"
        )
    if state.data.get("paused"):
        raise Conflict(f"the loop of {model} is paused: modelloop loop resume first")
    at = now if now is not None else time.time_ns() // 1_000_000
    _, event = store.transition_loop(
        model,
        expected_revision=state.revision,
        state="retraining",
        data=retrain_data(model, state, at, {"kind": "manual", "reason": reason}),
        kind="trigger",
        message=f"retrain: {reason}",
        evidence={"trigger": "manual", "reason": reason},
        now=at,
    )
    return event


def default_holder() -> str:
    """``host:pid:random``: names this controller in leases and events."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Controller(RolloutMixin):
    """Advances one model's loop. ``tick()`` evaluates once; call it on a schedule (``run``)."""

    def __init__(
        self,
        store: Store,
        policy: LoopPolicy,
        actions: LoopActions,
        *,
        home: str | os.PathLike[str],
        model: str | None = None,
        server: ServerLink | None = None,
        holder: str | None = None,
        clock: Callable[[], int] | None = None,
        notify: Callable[[LoopEvent], None] | None = None,
    ) -> None:
        name = model or policy.model
        if not name:
            raise InvalidInput("the loop needs a model name: give one or set loop.model")
        self.model = name
        self.store = store
        self.policy = policy
        self.actions = actions
        self.home = Path(home)
        self.server = server
        self.holder = holder or default_holder()
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._notify: Callable[[LoopEvent], None] = notify or (lambda _event: None)
        # the events this controller told notify itself, and the newest event id it has
        # looked at: others' events after it (a person's pause, approval ...) are relayed
        self._told: set[int] = set()
        self._relayed_up_to: int | None = None
        self.lease_ttl_ms = max(ms(3 * policy.every_s), 60_000)

    # -- the tick ----------------------------------------------------------------------------

    def tick(self, *, dry_run: bool = False, max_steps: int = 8) -> TickResult:
        """Take the lease (or report its holder), then apply transitions until the loop has to
        wait. With ``dry_run`` nothing is changed: the result lists what would be done."""
        now = self.clock()
        state = self._state()
        if not dry_run:
            lease = self.store.acquire_loop_lease(
                self.model, self.holder, ttl_ms=self.lease_ttl_ms, now=now
            )
            if lease.holder != self.holder:
                return TickResult(
                    self.model,
                    False,
                    state.state,
                    state.revision,
                    f"waiting: the loop of {self.model} is held by {lease.holder} until "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(lease.expires_at / 1000))}"
                    " UTC",
                )
        events: list[LoopEvent] = []
        planned: list[str] = []
        message = "nothing to do"
        if not dry_run:
            self._relay()
        with self._renewing(dry_run):
            for _ in range(max_steps):
                step = self._decide(state, dry_run=dry_run)
                if isinstance(step, Wait):
                    message = step.message
                    if step.record and not dry_run:
                        event = self._record_wait(state, step)
                        if event is not None:
                            events.append(event)
                    break
                if dry_run:
                    planned.append(f"{state.state} -> {step.state}: {step.message}")
                    break
                try:
                    if step.effect is not None:
                        step.effect()
                        _fault("after-effect", step.state)
                except ServiceUnavailable as exc:
                    event = self._record_wait(state, Wait(f"waiting: {exc}", {}, True))
                    if event is not None:
                        events.append(event)
                    message = f"waiting: {exc}"
                    break
                try:
                    state, event = self.store.transition_loop(
                        self.model,
                        expected_revision=state.revision,
                        state=step.state,
                        data=step.data,
                        kind=step.kind,
                        message=step.message,
                        evidence=step.evidence,
                        holder=self.holder,
                        now=self.clock(),
                    )
                except Conflict:
                    # someone changed the loop meanwhile (a pause, an approval, another
                    # controller): its write stands; the next tick starts from it. An effect
                    # already applied is idempotent, and a rollout's routing is put back to
                    # the recorded stage when the loop goes on.
                    state = self._state()
                    message = (
                        f"the loop of {self.model} changed meanwhile ({state.state}, revision "
                        f"{state.revision}); not applied: {step.message}"
                    )
                    break
                events.append(event)
                message = step.message
                self._tell(event)
        return TickResult(
            self.model,
            bool(events) and not dry_run,
            state.state,
            state.revision,
            message,
            tuple(events),
            tuple(planned),
        )

    def request_retrain(self, reason: str = "requested by hand") -> LoopEvent:
        """Start a retrain now (``modelloop loop retrain``), cooldown notwithstanding; ``Conflict``
        while a retrain or rollout is under way."""
        event = request_retrain(self.store, self.model, reason, now=self.clock())
        self._tell(event)
        return event

    # -- helpers -----------------------------------------------------------------------------

    def _state(self) -> LoopState:
        from modelloop.store import LoopState

        found = self.store.get_loop_state(self.model)
        return found if found is not None else LoopState(self.model, "idle", 0, {}, 0)

    @contextlib.contextmanager
    def _renewing(self, dry_run: bool) -> Iterator[None]:
        """Keep the lease alive while a tick runs (a retrain can outlast it)."""
        if dry_run:
            yield
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_ttl_ms / 3000):
                # a failed renewal shows later, as a transition the store refuses
                with contextlib.suppress(Exception):
                    self.store.acquire_loop_lease(self.model, self.holder, ttl_ms=self.lease_ttl_ms)

        thread = threading.Thread(target=renew, daemon=True, name="modelloop-loop-lease")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _record_wait(self, state: LoopState, wait: Wait) -> LoopEvent | None:
        last = self.store.list_loop_events(self.model, limit=1)
        if last and last[-1].kind == "wait" and last[-1].message == wait.message:
            return None  # said already
        event = self.store.add_loop_event(
            self.model,
            kind="wait",
            state=state.state,
            message=wait.message,
            evidence=wait.evidence,
            now=self.clock(),
        )
        self._tell(event)
        return event

    def _tell(self, event: LoopEvent) -> None:
        """Hand an event this controller wrote to ``notify`` (once: the relay skips it)."""
        self._told.add(event.event_id)
        self._notify(event)

    def _relay(self) -> None:
        """Hand ``notify`` the events others wrote since the last tick — a person's pause,
        resume, approval or rejection, a retrain asked for by hand — so the loop's webhooks hear
        of every decision, whoever made it. The first tick only notes where the log stands."""
        if self._relayed_up_to is None:
            last = self.store.list_loop_events(self.model, limit=1)
            self._relayed_up_to = last[-1].event_id if last else 0
            return
        for event in self.store.list_loop_events(self.model, after_id=self._relayed_up_to):
            if event.event_id not in self._told:
                self._notify(event)
            self._relayed_up_to = max(self._relayed_up_to, event.event_id)
        self._told = {i for i in self._told if i > self._relayed_up_to}

    def _memo(self, state: LoopState) -> dict[str, Any]:
        return dict(state.data.get("memo") or {})

    def _retrain_data(self, state: LoopState, now: int, trigger: dict[str, Any]) -> dict[str, Any]:
        return retrain_data(self.model, state, now, trigger)

    def _decide(self, state: LoopState, *, dry_run: bool) -> Plan | Wait:
        paused = state.data.get("paused")
        if paused:
            return Wait(
                f"paused by {paused.get('by')}: {paused.get('reason') or 'no reason given'}",
                {"paused": paused, "state": state.state},
                record=True,
            )
        handler = {
            "retraining": self._retraining,
            "gating": self._gating,
            "rollout": self._rollout,
            "awaiting_approval": self._awaiting,
            "approved": self._approved,
            "promoting": self._promoting,
            "rolling_back": self._rolling_back,
        }.get(state.state, self._watch)
        return handler(state, dry_run)

    # -- watching ----------------------------------------------------------------------------

    def _watch(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        from modelloop.loop._triggers import check_triggers

        now = self.clock()
        memo = self._memo(state)
        last = memo.get("last_retrain_at")
        cooldown_ms = ms(self.policy.cooldown_s)
        if last is not None and now - last < cooldown_ms:
            return Wait(f"cooling down until {(last + cooldown_ms - now) / 1000:.0f} s from now")
        recent = [t for t in memo.get("retrain_times", []) if t > now - _DAY_MS]
        if len(recent) >= self.policy.max_retrains_per_day:
            return Wait(
                f"{len(recent)} retrains in the last 24 h, the policy's maximum", record=True
            )
        before = copy.deepcopy(memo)
        fired = check_triggers(
            self.store, self.model, self.policy.triggers, home=self.home, memo=memo, now=now
        )
        if not fired:
            if memo != before and not dry_run:  # a version's first live metrics: the base
                # of metric_drop (bookkeeping, not a decision: a dry run does not list it)
                return Plan(
                    state.state,
                    {**state.data, "memo": memo},
                    "baseline",
                    "live metrics of the champion recorded as its baseline",
                    {"baseline": memo.get("baseline", {})},
                )
            return Wait("no trigger fired")
        trigger = {"kind": fired[0]["trigger"], "fired": fired}
        data = self._retrain_data(state, now, trigger)
        if fired[0].get("result_id") is not None:
            data["memo"]["last_result_id"] = max(f.get("result_id") or 0 for f in fired)
        return Plan(
            "retraining",
            data,
            "trigger",
            "retrain: " + "; ".join(f["message"] for f in fired),
            {"fired": fired},
        )

    # -- retraining and the gate -------------------------------------------------------------

    def _find_attempt(self, attempt: str) -> int | None:
        try:
            versions = self.store.list_model_versions(self.model)
        except NotFound:
            return None
        found = [v.version for v in versions if v.tags.get(ATTEMPT_TAG) == attempt]
        return max(found) if found else None

    def _retraining(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        from modelloop.loop._evidence import labelled_rows

        data = dict(state.data)
        attempt = str(data.get("attempt"))
        keep = {"memo": data.get("memo", {}), "attempt": attempt}
        version = self._find_attempt(attempt)
        if version is not None:  # a retrain of this attempt finished before a restart
            return Plan(
                "gating",
                {**keep, "challenger": version},
                "retrain",
                f"challenger v{version} registered (attempt {attempt})",
                {"version": version, "resumed": True},
            )
        spec = self.policy.training
        path: Path | None = None
        rows = 0
        if spec.source in ("log", "both"):
            now = self.clock()
            since = None if spec.mode == "expanding" else now - ms(spec.window_s)
            frame = labelled_rows(self.home, self.model, since_ms=since, until_ms=now)
            rows = len(frame)
            if rows < spec.min_labelled_rows:
                return Plan(
                    "failed",
                    {"memo": keep["memo"]},
                    "retrain",
                    f"retrain skipped: {rows} labelled served rows, the policy needs "
                    f"{spec.min_labelled_rows}",
                    {"labelled_rows": rows, "min_labelled_rows": spec.min_labelled_rows},
                )
            if dry_run:
                return Plan("gating", keep, "retrain", f"would retrain on {rows} labelled rows")
            path = self._write_training(frame, attempt)
        if dry_run:
            return Plan("gating", keep, "retrain", "would retrain on the pipeline's own data")
        outcome = self.actions.retrain(
            attempt=attempt, data=path, with_source=spec.source == "both"
        )
        evidence = {
            "status": outcome.status,
            "run_id": outcome.run_id,
            "labelled_rows": rows,
            **outcome.evidence,
        }
        if outcome.version is None:
            return Plan(
                "failed",
                {"memo": keep["memo"]},
                "retrain",
                f"retrain registered nothing: {outcome.reason or outcome.status}",
                evidence,
            )
        return Plan(
            "gating",
            {**keep, "challenger": outcome.version},
            "retrain",
            f"challenger v{outcome.version} registered ({rows} labelled rows)",
            {**evidence, "version": outcome.version},
        )

    def _write_training(self, frame: pd.DataFrame, attempt: str) -> Path:
        from modelloop._fs import atomic_file

        folder = self.home / "loop" / self.model
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"train-{attempt.rsplit(':', 1)[-1]}.parquet"
        with atomic_file(path) as fh:
            frame.to_parquet(fh, index=False)
        return path

    def _gating(self, state: LoopState, dry_run: bool) -> Plan | Wait:
        from modelloop.loop._evidence import labelled_rows

        data = dict(state.data)
        challenger = int(data["challenger"])
        champion = self._champion()
        gate = self.policy.gate
        evidence: dict[str, Any] = {"challenger": challenger, "champion": champion}
        if champion is not None and not dry_run:
            now = self.clock()
            rows = labelled_rows(self.home, self.model, since_ms=now - ms(gate.window_s))
            evidence.update(metric=gate.metric, rows=len(rows), tolerance=gate.tolerance)
            if len(rows) >= gate.min_rows:
                ch = self.actions.score(challenger, rows, gate.metric)
                cp = self.actions.score(champion, rows, gate.metric)
                evidence.update(challenger_value=ch, champion_value=cp)
                lower_better = gate.metric in REGRESSION_METRICS
                worse = (
                    ch is None
                    or (cp is not None and lower_better and ch > cp + gate.tolerance)
                    or (cp is not None and not lower_better and ch < cp - gate.tolerance)
                )
                if worse:
                    reason = (
                        f"gate: challenger v{challenger} {gate.metric} {fmt(ch)} vs champion "
                        f"v{champion} {fmt(cp)} on the last {len(rows)} labelled rows"
                    )
                    return self._to_rollback(data, challenger, reason, evidence, stage=None)
                evidence["passed"] = True
            else:
                evidence["note"] = f"{len(rows)} labelled rows < {gate.min_rows}: not compared"
        if self.policy.rollout.needs_approval("rollout"):
            keep = {"memo": data.get("memo", {}), "attempt": data.get("attempt")}
            return self._await_approval(keep, challenger, "rollout", evidence)
        return self._enter_stage(data, 0, evidence)
