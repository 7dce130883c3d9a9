"""``modelloop loop``: the controller that retrains on triggers and rolls challengers out as
judged canaries, and what it has done."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import JsonOpt, console, err_console, fmt_time, print_json, row

if TYPE_CHECKING:
    from modelloop.loop._controller import Controller, TickResult
    from modelloop.store import LoopEvent

loop_app = typer.Typer(
    help="The closed loop: retrain on drift, roll out as a judged canary, promote or roll back.",
    no_args_is_help=True,
)

PipelineArg = Annotated[
    Path,
    typer.Argument(help="The model's pipeline file (modelloop.yaml) with its 'loop:' section."),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", help="A loop policy file of its own, instead of the 'loop:' section."),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="URL of the running 'modelloop serve' to drive (default: the policy's 'server'). "
        "Its admin token comes from the variable named by the policy's token_env.",
    ),
]


WebhookOpt = Annotated[
    list[str] | None,
    typer.Option("--webhook", help="POST every loop event as JSON to this URL (repeatable)."),
]


def _controller(
    pipeline: Path,
    policy_file: Path | None,
    server: str | None,
    notify: Callable[[LoopEvent], None] | None = None,
) -> Controller:
    from modelloop._client import default_client
    from modelloop.cli._output import require_extra
    from modelloop.exceptions import InvalidInput
    from modelloop.loop._actions import PipelineActions
    from modelloop.loop._controller import Controller
    from modelloop.loop._policy import load_policy
    from modelloop.loop._server import ServerLink

    require_extra("loop", "statsmodels", "yaml", "pydantic")
    client = default_client()
    actions = PipelineActions(client, pipeline)
    if policy_file is not None:
        policy = load_policy(policy_file)
    elif actions.spec.loop is None:
        raise InvalidInput(
            f"{pipeline.name} has no 'loop:' section: add one (see the README) or pass --policy"
        )
    else:
        policy = load_policy(pipeline)
    url = server or policy.server
    link = None
    if url:
        link = ServerLink(url, os.environ.get(policy.token_env))
    model = policy.model or (actions.spec.register.model_name if actions.spec.register else None)
    return Controller(
        client.store,
        policy,
        actions,
        home=client.settings.home,
        model=model,
        server=link,
        notify=notify,
    )


def _print_tick(result: TickResult) -> None:
    for e in result.events:
        console.print(
            f"{fmt_time(e.timestamp)}  [bold]{escape(e.kind)}[/] → {escape(e.state)}  "
            f"{escape(e.message)}",
            highlight=False,
        )
    for plan in result.planned:
        console.print(f"[yellow]would[/] {escape(plan)}", highlight=False)
    if not result.events and not result.planned:
        console.print(
            f"{escape(result.model)}: {escape(result.state)} — {escape(result.message)}",
            highlight=False,
        )


@loop_app.command("tick")
def tick(
    pipeline: PipelineArg,
    policy: PolicyOpt = None,
    server: ServerOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what the loop would do; change nothing.")
    ] = False,
    webhook: WebhookOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate the loop once (for cron and CI): act, then exit."""
    from modelloop.loop._notify import webhook_notifiers

    notifiers, notify = webhook_notifiers(webhook or [])
    ctl = _controller(pipeline, policy, server, notify)
    try:
        result = ctl.tick(dry_run=dry_run)
    finally:  # one tick, then the lease is free for the next one (or a running controller)
        ctl.store.release_loop_lease(ctl.model, ctl.holder)
        _close(notifiers)
    if as_json:
        print_json(result.to_dict())
    else:
        _print_tick(result)


@loop_app.command("run")
def run(
    pipeline: PipelineArg,
    policy: PolicyOpt = None,
    server: ServerOpt = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Time between ticks, e.g. 30s, 5m (default: the policy's)."),
    ] = None,
    max_ticks: Annotated[
        int | None, typer.Option("--max-ticks", help="Stop after this many ticks.", min=1)
    ] = None,
    webhook: WebhookOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve the loop's Prometheus gauges on 127.0.0.1:PORT/metrics.",
            min=1,
            max=65535,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the controller until SIGTERM or Ctrl-C: one tick every --every."""
    from modelloop.loop._notify import LoopGauges, webhook_notifiers
    from modelloop.loop._policy import _seconds

    gauges = LoopGauges()
    notifiers, send = webhook_notifiers(webhook or [])

    def notify(event: LoopEvent) -> None:
        gauges.count(event)
        send(event)

    ctl = _controller(pipeline, policy, server, notify)
    if metrics_port is not None:
        gauges.serve(metrics_port)
    period = _seconds(every) if every else ctl.policy.every_s
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print(
        f"loop of {escape(ctl.model)}: a tick every {period:g} s as {escape(ctl.holder)}",
        highlight=False,
    )
    ticks = 0
    last_message = None
    try:
        while not stop.is_set():
            result = ctl.tick()
            ticks += 1
            if (state := ctl.store.get_loop_state(ctl.model)) is not None:
                gauges.update(state)
            for failure in (f for n in notifiers for f in n.take_failures()):
                err_console.print(f"webhook: {escape(failure)}", highlight=False)
            if as_json:
                if result.events:
                    print_json(result.to_dict())
            elif result.events or result.message != last_message:
                _print_tick(result)
            last_message = result.message
            if max_ticks is not None and ticks >= max_ticks:
                break
            stop.wait(period)
    finally:
        ctl.store.release_loop_lease(ctl.model, ctl.holder)
        _close(notifiers)


def _close(notifiers: list[Any]) -> None:
    """Deliver what is queued (a few seconds at most), then say what could not be."""
    for n in notifiers:
        n.flush(timeout=10)
        for failure in n.take_failures():
            err_console.print(f"webhook: {escape(failure)}", highlight=False)
        n.close()


@loop_app.command("retrain")
def retrain(
    pipeline: PipelineArg,
    policy: PolicyOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Recorded with the event.")] = (
        "requested by hand"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Start a retrain now, cooldown notwithstanding; the controller carries it through."""
    event = _controller(pipeline, policy, None).request_retrain(reason)
    if as_json:
        print_json({"event_id": event.event_id, "state": event.state, "message": event.message})
    else:
        console.print(f"{escape(event.message)} (state {event.state})", highlight=False)


@loop_app.command("status")
def status(
    model: Annotated[str | None, typer.Argument(help="Model name (default: every loop).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Where each model's loop stands: state, challenger, stage and share."""
    from modelloop._client import default_client

    store = default_client().store
    states = store.list_loop_states()
    if model is not None:
        states = [s for s in states if s.model_name == model]
        if not states:
            from modelloop.exceptions import NotFound

            raise NotFound(f"no loop has run for model {model!r}")
    if as_json:
        from modelloop.loop._notify import state_dict

        print_json({"loops": [state_dict(s) for s in states]})
        return
    table = Table(title=f"{len(states)} loop(s)")
    for col in ("model", "state", "paused", "challenger", "stage", "share", "since"):
        table.add_column(col)
    for s in states:
        d = s.data
        holding = s.state in ("rollout", "awaiting_approval") and "mode" in d
        stage = "" if "stage" not in d or not holding else str(int(d["stage"]) + 1)
        share = "" if not holding else f"{d.get('mode')} {float(d.get('share', 0)):g}"
        paused = d.get("paused") or {}
        table.add_row(
            *row(
                s.model_name,
                s.state,
                f"by {paused.get('by')}" if paused else "",
                d.get("challenger", ""),
                stage,
                share,
                fmt_time(s.updated_at),
            )
        )
    console.print(table)


@loop_app.command("history")
def history(
    model: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest events to show.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Every decision of a model's loop, with its evidence (--json for all of it)."""
    from modelloop._client import default_client
    from modelloop.loop._notify import event_dict

    events = default_client().store.list_loop_events(model, limit=limit)
    if as_json:
        print_json({"model": model, "events": [event_dict(e) for e in events]})
        return
    table = Table(title=f"loop of {model}: {len(events)} event(s)")
    for col in ("time", "kind", "state", "message"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(*row(fmt_time(e.timestamp), e.kind, e.state, e.message))
    console.print(table)


ModelArg = Annotated[str, typer.Argument(help="Model name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Recorded with the event.")]


def _operate(model: str, op: str, reason: str, as_json: bool) -> None:
    from modelloop._client import default_client
    from modelloop.loop._operator import operate

    client = default_client()
    state, event = operate(
        client.store,
        model,
        op,  # type: ignore[arg-type]
        user=client.settings.user,
        reason=reason,
    )
    if as_json:
        from modelloop.loop._notify import event_dict, state_dict

        print_json({"state": state_dict(state), "event": event_dict(event)})
    else:
        console.print(
            f"{escape(event.message)} (state {escape(state.state)}, revision {state.revision})",
            highlight=False,
        )


@loop_app.command("pause")
def pause(model: ModelArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Pause a model's loop: no retrain, no stage judged or advanced, a canary holds its share
    of traffic, until 'modelloop loop resume'."""
    _operate(model, "pause", reason, as_json)


@loop_app.command("resume")
def resume(model: ModelArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Resume a paused loop where it was."""
    _operate(model, "resume", reason, as_json)


@loop_app.command("approve")
def approve(model: ModelArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Let a challenger awaiting approval go on (into its rollout, or to champion)."""
    _operate(model, "approve", reason, as_json)


@loop_app.command("reject")
def reject(model: ModelArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Drop a challenger awaiting approval: it is rolled back as a failed gate would be."""
    _operate(model, "reject", reason, as_json)
