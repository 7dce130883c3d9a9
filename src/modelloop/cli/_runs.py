"""``modelloop runs`` and ``modelloop experiments``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import JsonOpt, console, fmt_time, print_json, row
from modelloop.store import RunStatus
from modelloop.store._owner import STALE_AFTER_MS

runs_app = typer.Typer(help="List and inspect tracked runs.", no_args_is_help=True)
experiments_app = typer.Typer(help="List experiments.", no_args_is_help=True)


@runs_app.command("list")
def list_runs(
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Experiment name (repeatable; default: all)."),
    ] = None,
    filter: Annotated[
        str,
        typer.Option("--filter", "-f", help="e.g. \"metrics.auc > 0.8 and params.depth = '6'\""),
    ] = "",
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", "-o", help="e.g. 'metrics.auc DESC' (repeatable)."),
    ] = None,
    max_results: Annotated[int, typer.Option("--max", "-n", help="Rows per page.", min=1)] = 50,
    page_token: Annotated[
        str | None, typer.Option("--page-token", help="From a previous page.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first, filtered and ordered in the database."""
    from modelloop.cli._output import cli_client

    page = cli_client(writes=False).search_runs(
        experiment or None,
        filter=filter,
        order_by=order_by or (),
        max_results=max_results,
        page_token=page_token,
    )
    if as_json:
        print_json({"runs": list(page.items), "next_page_token": page.next_page_token})
        return
    table = Table(title=f"{len(page)} run(s)")
    table.add_column("run id", no_wrap=True, min_width=32)
    for col in ("name", "status", "started", "metrics"):
        table.add_column(col, overflow="fold")
    for r in page:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())[:6])
        table.add_row(*row(r.run_id, r.name, r.state, fmt_time(r.start_time), metrics))
    console.print(table)
    if page.next_page_token:
        console.print(f"more: --page-token {page.next_page_token}")


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="The run's 32-character id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one run: params, latest metrics, tags, datasets and artifacts."""
    from modelloop.cli._output import cli_client

    client = cli_client(writes=False)
    run = client.get_run(run_id)
    datasets = client.store.list_run_datasets(run_id)
    artifacts = client.list_artifacts(run_id)
    if as_json:
        print_json(
            {
                "run": run,
                "datasets": [
                    {
                        "role": d.role,
                        "name": d.dataset.name,
                        "digest": d.dataset.digest,
                        "num_rows": d.dataset.num_rows,
                    }
                    for d in datasets
                ],
                "artifacts": artifacts,
            }
        )
        return
    colour = "yellow" if run.stale else "cyan"
    console.print(f"[bold]{escape(run.name)}[/]  {run.run_id}  [{colour}]{run.state}[/]")
    console.print(
        f"started {fmt_time(run.start_time)}  ended {fmt_time(run.end_time)}  by {escape(run.user)}"
    )
    if run.owner is not None:
        console.print(
            f"owner: pid {run.owner.pid} on {escape(run.owner.host)}  "
            f"last heartbeat {fmt_time(run.heartbeat_at)}"
        )
    if run.stale:
        console.print(
            "[yellow]stale:[/] the run is RUNNING but its process is gone or silent; "
            "`modelloop runs gc` ends it"
        )
    for title, mapping in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        if mapping:
            table = Table(title=title, show_header=False)
            table.add_column("key")
            table.add_column("value", overflow="fold")
            for k, v in sorted(mapping.items()):
                table.add_row(*row(k, f"{v:.6g}" if isinstance(v, float) else v))
            console.print(table)
    for d in datasets:
        console.print(
            f"dataset ({escape(d.role)}): {escape(d.dataset.name)}  {d.dataset.num_rows} rows  "
            f"sha256 {d.dataset.digest[:16]}…"
        )
    for a in artifacts:
        console.print(f"artifact: {escape(a.path)}  {a.size} bytes  sha256 {a.digest[:16]}…")


@runs_app.command("gc")
def gc_runs(
    status: Annotated[
        str, typer.Option("--status", help="Final status for stale runs: FAILED or KILLED.")
    ] = "FAILED",
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0,
            help="Seconds without a heartbeat after which a run owned by another machine is "
            "stale (runs of this machine are judged by their process).",
        ),
    ] = STALE_AFTER_MS / 1000,
    as_json: JsonOpt = False,
) -> None:
    """End RUNNING runs whose process is gone (stale runs), with an end time and a reason tag."""
    from modelloop.cli._output import cli_client
    from modelloop.exceptions import InvalidInput

    if status.upper() not in (RunStatus.FAILED.value, RunStatus.KILLED.value):
        raise InvalidInput(f"--status must be FAILED or KILLED, got {status!r}")
    ended = cli_client().store.end_stale_runs(
        RunStatus(status.upper()), stale_after_ms=round(timeout * 1000)
    )
    if as_json:
        print_json({"ended": ended})
        return
    for r in ended:
        console.print(
            f"{r.run_id}  {escape(r.name)}  {r.status.value}  last seen {fmt_time(r.end_time)}"
        )
    console.print(f"{len(ended)} stale run(s) ended")


@experiments_app.command("list")
def list_experiments(as_json: JsonOpt = False) -> None:
    """List experiments, oldest first."""
    from modelloop.cli._output import cli_client

    exps = cli_client(writes=False).store.list_experiments()
    if as_json:
        print_json({"experiments": exps})
        return
    table = Table(title=f"{len(exps)} experiment(s)")
    table.add_column("id")
    table.add_column("name")
    table.add_column("created")
    for e in exps:
        table.add_row(*row(e.experiment_id, e.name, fmt_time(e.created_at)))
    console.print(table)
