"""``modelloop ops``: the operational history of served models and its anomalies."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import JsonOpt, console, print_json

ops_app = typer.Typer(
    help="Operational history of served models (recorded by modelloop serve) and its anomalies.",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="Model name (as served).")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Start: a duration ago (30m, 2h, 7d) or an ISO date-time (default: all)."
    ),
]


PrometheusOpt = Annotated[
    str | None,
    typer.Option(
        "--prometheus",
        help="Read the history from this Prometheus (http://host:9090), which scrapes the "
        "server's /metrics, instead of the one modelloop serve records (--since defaults to 1d).",
    ),
]
StepOpt = Annotated[
    float,
    typer.Option(
        "--step",
        help="With --prometheus: seconds per row (at least the scrape interval).",
        min=0.001,
    ),
]


def _history(model: str, since: str | None, prometheus: str | None, step: float) -> Any:
    from modelloop._config import Settings
    from modelloop.aiops import read_ops_history, read_prometheus_history

    if prometheus:
        return read_prometheus_history(model, prometheus, since, step_s=step)
    return read_ops_history(model, since, home=Settings.from_env().home)


@ops_app.command("anomalies")
def ops_anomalies(
    model: ModelArg,
    since: SinceOpt = None,
    prometheus: PrometheusOpt = None,
    step: StepOpt = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Spikes, level shifts, variance changes and error bursts in a model's operational history,
    each with its span, expected band and observed value."""
    from modelloop._config import Settings
    from modelloop.aiops import scan_ops_history

    if prometheus:
        scan = scan_ops_history(model, history=_history(model, since, prometheus, step))
    else:
        scan = scan_ops_history(model, since, home=Settings.from_env().home)
    if as_json:
        print_json(scan.to_dict())
        return
    console.print(
        f"{escape(model)}: {scan.rows} intervals of {scan.step_s:g} s from {scan.start} to "
        f"{scan.end}; {len(scan.anomalies)} anomalies ({len(scan.current())} still going on)"
    )
    for note in scan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if not scan.anomalies:
        return
    table = Table()
    for col in ("series", "kind", "start", "end", "observed", "expected", "band", "score"):
        table.add_column(col)
    for a in scan.anomalies:
        table.add_row(
            a.series,
            a.kind,
            f"{a.start:%Y-%m-%d %H:%M:%S}",
            f"{a.end:%Y-%m-%d %H:%M:%S}",
            f"{a.observed:.4g}",
            f"{a.expected:.4g}",
            f"{a.low:.4g} to {a.high:.4g}",
            f"{a.score:+.1f}",
        )
    console.print(table)


@ops_app.command("history")
def ops_history(
    model: ModelArg,
    since: SinceOpt = None,
    prometheus: PrometheusOpt = None,
    step: StepOpt = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """The recorded intervals: requests, errors, rejected, latency quantiles, batch size, queue
    depth, CPU and RSS."""
    frame = _history(model, since, prometheus, step)
    if as_json:
        out = frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat()))
        print_json(out.astype(object).where(out.notna(), None).to_dict(orient="records"))
        return
    console.print(frame.to_string(index=False))
