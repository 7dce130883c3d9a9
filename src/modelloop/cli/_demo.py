"""``modelloop demo``: traffic from the bundled flights data, for trying the loop locally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelloop.cli._output import JsonOpt, cli_client, console, print_json
from modelloop.exceptions import InvalidInput

demo_app = typer.Typer(help="Demo traffic from the bundled NYC flights data.", no_args_is_help=True)


SeedOpt = Annotated[int, typer.Option("--seed", help="Sampling seed.")]


def _months(spec: str, *, ranges: bool = False) -> list[int]:
    """``6,7``; with ``ranges`` also ``3-12``."""
    try:
        if ranges and "-" in spec:
            first, last = (int(x) for x in spec.split("-", 1))
            return list(range(first, last + 1))
        return [int(m) for m in spec.split(",") if m.strip()]
    except ValueError:
        example = "3-12 or 3,4" if ranges else "6,7"
        raise InvalidInput(f"bad --months {spec!r}: use e.g. {example}") from None


@demo_app.command("replay")
def replay(
    months: Annotated[
        str, typer.Option("--months", help="Months of 2013 to replay, e.g. 6,7.")
    ] = "7",
    rows: Annotated[
        int, typer.Option("--rows", help="How many flights to sample.", min=1)
    ] = 20_000,
    model: Annotated[
        str, typer.Option("--model", help="NAME, NAME@ALIAS or NAME/VERSION.")
    ] = "flights-delay@champion",
    minutes: Annotated[
        float, typer.Option("--minutes", help="Spread the requests over the last N minutes.")
    ] = 60.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Score sampled flights with a registered model into its prediction log, with their real
    delays as feedback labels, as if a server had answered them."""
    from modelloop.demo import replay_flights

    result = replay_flights(
        cli_client(), model, months=_months(months), rows=rows, seed=seed, minutes=minutes
    )
    if as_json:
        print_json(result)
        return
    console.print(
        f"logged {result.rows} predictions of {result.model} v{result.version} "
        f"(months {months}) to {result.predictions}\n"
        f"next: modelloop monitor run {result.model} --window 2h"
    )


@demo_app.command("loop")
def loop(
    months: Annotated[
        str, typer.Option("--months", help="Months of 2013 to replay, e.g. 3-12 or 3,4.")
    ] = "3-12",
    rows: Annotated[int, typer.Option("--rows", help="Flights sampled per month.", min=100)] = 4000,
    seed: SeedOpt = 0,
    day_seconds: Annotated[
        float, typer.Option("--day-seconds", help="Wall seconds of one simulated day's traffic.")
    ] = 0.2,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="An empty folder for the demo's store, log and server."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML page.")] = Path(
        "modelloop-loop-demo.html"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Replay March-December 2013 through a real `modelloop serve` with the loop controller
    on, on a simulated clock; compare with the January-February champion left alone."""
    import tempfile

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from modelloop.cli._output import require_extra, row
    from modelloop.demo import run_loop_demo

    require_extra("serve,monitoring,pipeline,loop", "fastapi", "uvicorn", "plotly", "statsmodels")
    folder = workdir or Path(tempfile.mkdtemp(prefix="modelloop-loop-demo-"))
    progress = Progress(
        TextColumn("replaying {task.fields[date]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    )
    with progress:
        task = progress.add_task("replay", total=None, date="")

        def on_day(done: int, total: int, date: str) -> None:
            progress.update(task, completed=done, total=total, date=date)

        result = run_loop_demo(
            folder,
            months=_months(months, ranges=True),
            rows_per_month=rows,
            seed=seed,
            day_seconds=day_seconds,
            page=out,
            on_day=on_day,
        )
    if as_json:
        print_json(result)
        return
    table = Table(title="Static January-February champion vs the looped champion")
    for name in ("month", "AUC static", "AUC looped", "Brier static", "Brier looped", "served by"):
        table.add_column(name)

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for m in result.months:
        table.add_row(
            *row(
                m,
                f(result.static_auc_by_month.get(m)),
                f(result.loop_auc_by_month.get(m)),
                f(result.static_brier_by_month.get(m)),
                f(result.loop_brier_by_month.get(m)),
                ", ".join(f"v{v}" for v in result.champion_by_month.get(m, [])),
            )
        )
    table.add_row(
        *row(
            "mean",
            f(result.static_auc_mean),
            f(result.loop_auc_mean),
            f(result.static_brier_mean),
            f(result.loop_brier_mean),
            "",
        )
    )
    console.print(table)
    events = Table(title="Loop events")
    for name in ("simulated date", "kind", "message"):
        events.add_column(name)
    for e in result.events:
        events.add_row(*row(e["date"], e["kind"], e["message"]))
    console.print(events)
    console.print(
        f"{result.retrains} retrains, {result.promotions} promotions, {result.rollbacks} "
        f"rollbacks; {result.rows_per_month} flights per month (seed {result.seed}); one "
        f"simulated day = {result.sim_day_wall_s:.3f} s; {result.wall_s:.0f} s in all\n"
        f"page: {result.page}\nfolder: {result.workdir}"
    )
