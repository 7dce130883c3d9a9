"""What a person does to a running loop: pause and resume it, approve or reject a challenger
that waits for approval (``modelloop loop pause|resume|approve|reject``, the control plane's
routes and the dashboard's buttons call these).

Each is one compare-and-set transition of the loop's state, written with the event that names
the user and the reason, so it can neither be lost against a controller's concurrent tick nor
undo one: a tick that moved the loop on first makes the operator's write retry on the new
state (or, with ``expected_revision``, refuse with ``Conflict``), and an operator's write that
came first makes the tick's own transition fail and the controller look again.

Paused, the controller does nothing on its ticks (it records once that it is paused): no
trigger starts a retrain, no stage is judged or advanced, and a canary holds the share of
traffic it had. Resuming continues from the same state; a stage's time limit and an approval's
timeout are moved on by the time spent paused, so a pause never decides a rollout.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Literal

from modelloop.exceptions import Conflict, NotFound

if TYPE_CHECKING:
    from modelloop.store import LoopEvent, LoopState, Store
    from modelloop.store._http import HttpStore

__all__ = [
    "AWAITING",
    "OPERATIONS",
    "Operation",
    "approve_loop",
    "operate",
    "pause_loop",
    "reject_loop",
    "resume_loop",
]

#: The state of a loop that waits for ``modelloop loop approve`` (or ``reject``).
AWAITING = "awaiting_approval"
Operation = Literal["pause", "resume", "approve", "reject"]
OPERATIONS: tuple[Operation, ...] = ("pause", "resume", "approve", "reject")
#: How long a person's operation keeps retrying while ticks keep moving the loop on.
_PATIENCE_S = 30.0


def _plan(
    op: Operation, state: LoopState, user: str, reason: str, now: int
) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(new state, data, message, evidence) of ``op`` on ``state``; ``Conflict`` when it does
    not apply."""
    model, data = state.model_name, dict(state.data)
    paused = data.get("paused")
    who = {"user": user, "reason": reason}
    if op == "pause":
        if paused:
            raise Conflict(
                f"the loop of {model} is already paused (by {paused.get('by')}): "
                "modelloop loop resume first"
            )
        data["paused"] = {"by": user, "reason": reason, "at": now}
        return state.state, data, f"paused by {user}: {reason}", {**who, "state": state.state}
    if op == "resume":
        if not paused:
            raise Conflict(f"the loop of {model} is not paused")
        data.pop("paused")
        held = max(0, now - int(paused.get("at") or now))
        for key in ("deadline", "expires_at"):  # time paused does not count against a limit
            if data.get(key) is not None:
                data[key] = int(data[key]) + held
        return (
            state.state,
            data,
            f"resumed by {user}" + (f": {reason}" if reason else ""),
            {**who, "state": state.state, "paused_ms": held},
        )
    if state.state != AWAITING:
        raise Conflict(
            f"the loop of {model} is not awaiting approval (it is {state.state}): nothing to {op}"
        )
    challenger = int(data["challenger"])
    before = "its rollout" if data.get("approval") == "rollout" else "its promotion"
    evidence = {**who, "challenger": challenger, "approval": data.get("approval")}
    if op == "approve":
        data["approved"] = {"by": user, "reason": reason, "at": now}
        text = f"v{challenger} approved before {before} by {user}"
        return "approved", data, text + (f": {reason}" if reason else ""), evidence
    text = f"rejected by {user} before {before}" + (f": {reason}" if reason else "")
    out: dict[str, Any] = {"memo": data.get("memo", {}), "challenger": challenger, "reason": text}
    if paused:
        out["paused"] = paused
    return "rolling_back", out, f"rolling back v{challenger}: {text}", evidence


def operate(
    store: Store,
    model: str,
    op: Operation,
    *,
    user: str,
    reason: str = "",
    expected_revision: int | None = None,
    now: int | None = None,
) -> tuple[LoopState, LoopEvent]:
    """Apply ``op`` to ``model``'s loop as ``user``. ``NotFound`` when no loop has run for the
    model, ``Conflict`` when ``op`` does not apply to its state (or the state is no longer at
    ``expected_revision``). Through a control plane (``MODELLOOP_STORE_URL``) the server does
    it, under the authenticated user."""
    from modelloop.store._http import HttpStore

    if op not in OPERATIONS:
        raise ValueError(f"unknown loop operation {op!r}")
    reason = reason.strip()[:500]
    if isinstance(store, HttpStore):
        return _remote(store, model, op, user, reason, expected_revision)
    deadline = time.monotonic() + _PATIENCE_S
    attempt = 0
    while True:
        state = store.get_loop_state(model)
        if state is None:
            raise NotFound(f"no loop has run for model {model!r} (modelloop loop run)")
        if expected_revision is not None and state.revision != expected_revision:
            raise Conflict(
                f"the loop of {model} moved on (revision {state.revision}, not "
                f"{expected_revision}): look again"
            )
        at = now if now is not None else time.time_ns() // 1_000_000
        new, data, message, evidence = _plan(op, state, user, reason, at)
        try:
            return store.transition_loop(
                model,
                expected_revision=state.revision,
                state=new,
                data=data,
                kind=op,
                message=message,
                evidence=evidence,
                now=at,
            )
        except Conflict:
            if expected_revision is not None:
                raise
            # A tick moved the loop on meanwhile: the operation applies to the new state. A
            # random pause, growing with each loss, lets it win against a busy writer.
            attempt += 1
            if time.monotonic() >= deadline:
                raise Conflict(
                    f"the loop of {model} kept changing for {_PATIENCE_S:.0f} s; {op} was not "
                    "applied: try again"
                ) from None
            time.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))


def _remote(
    store: HttpStore,
    model: str,
    op: Operation,
    user: str,
    reason: str,
    expected_revision: int | None,
) -> tuple[LoopState, LoopEvent]:
    from urllib.parse import quote

    from modelloop.store import LoopEvent, LoopState
    from modelloop.store._http._codec import decode

    # the server records the authenticated user; ``user`` counts in its open mode only
    body = {"reason": reason, "expected_revision": expected_revision, "user": user}
    got = store.transport.write("POST", f"/loop/states/{quote(model, safe='')}/{op}", body)
    return decode(LoopState, got["state"]), decode(LoopEvent, got["event"])


def pause_loop(store: Store, model: str, *, user: str, reason: str = "", **kw: Any) -> LoopEvent:
    """Pause ``model``'s loop (see the module's notes)."""
    return operate(store, model, "pause", user=user, reason=reason, **kw)[1]


def resume_loop(store: Store, model: str, *, user: str, reason: str = "", **kw: Any) -> LoopEvent:
    """Resume a paused loop from the state it was paused in."""
    return operate(store, model, "resume", user=user, reason=reason, **kw)[1]


def approve_loop(store: Store, model: str, *, user: str, reason: str = "", **kw: Any) -> LoopEvent:
    """Let a challenger waiting for approval go on: into its rollout, or to ``champion``."""
    return operate(store, model, "approve", user=user, reason=reason, **kw)[1]


def reject_loop(store: Store, model: str, *, user: str, reason: str = "", **kw: Any) -> LoopEvent:
    """Drop a challenger waiting for approval, as a failed gate does (rolled back)."""
    return operate(store, model, "reject", user=user, reason=reason, **kw)[1]
