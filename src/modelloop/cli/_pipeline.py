"""``modelloop pipeline``: run a training pipeline declared in ``modelloop.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import (
    JsonOpt,
    cli_client,
    console,
    err_console,
    fail,
    print_json,
    row,
)
from modelloop.exceptions import ModelloopError

if TYPE_CHECKING:
    from modelloop._client import Client
    from modelloop.pipeline import Pipeline, PipelineResult, StepEvent

__all__ = ["EXIT_ALIAS_HELD", "EXIT_GATE_FAILED", "EXIT_VALIDATION_FAILED", "pipeline_app"]

#: Exit code when the pipeline finished but a gate failed (nothing registered).
EXIT_GATE_FAILED = 10
#: Exit code when data validation stopped the run before training: a hard violation (a missing
#: column included), or a soft one under ``validation.on_soft: fail``. The value is
#: ``DataValidationError.exit_code``, its one definition.
EXIT_VALIDATION_FAILED = 11
#: Exit code when the model was registered but the alias was held where it was: soft
#: validation problems under ``validation.on_soft: hold``.
EXIT_ALIAS_HELD = 12

pipeline_app = typer.Typer(
    help="Training pipelines declared in modelloop.yaml.", no_args_is_help=True
)


@pipeline_app.callback()
def _pipeline() -> None:
    """Training pipelines declared in modelloop.yaml."""


@pipeline_app.command("run")
def run_pipeline(
    file: Annotated[Path, typer.Argument(help="Pipeline file (default: ./modelloop.yaml).")] = Path(
        "modelloop.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field: key.path=value (value read as YAML), e.g. "
            "--set model.params.max_iter=50. Repeatable.",
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Recompute every step, ignoring cached results.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Tuning workers: local processes, or Ray tasks with --executor ray "
            "(default: tune.workers). With a fixed "
            "tune.study and a PostgreSQL store, run this on several machines to share one study.",
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where the tuning workers run: local (processes here) or ray (Ray tasks on "
            "the cluster at --ray-address, sharing the study in the store's database).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster address (ray.init(address=...)); default RAY_ADDRESS, else a "
            "local Ray started for this run. Only with --executor ray.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run load → validate → split → (tune →) train → evaluate → explain → gate → register.

    Unchanged steps are reused from the cache. Exit codes: 0 when every gate passed (and the
    model was registered if the file has a register section, or found to be a version the
    registry already holds: nothing registered, no alias moved); 10 when a gate failed (nothing
    registered); 11 when data validation stopped the run before training (a hard violation such
    as a missing column, or a soft one under validation.on_soft: fail); 12 when the model was
    registered but its alias not moved (soft validation problems under validation.on_soft:
    hold); 2 for an invalid pipeline file or --set value (every problem found is listed before
    any step runs); 7 when the artifact root cannot be written; other errors use the usual
    codes (13 when the Ray cluster of --executor ray does not answer, before any step runs).
    Soft validation problems are listed in the summary and in --json.
    """
    from modelloop.cli._output import require_extra

    require_extra("pipeline", "yaml", "pydantic", "optuna", "pandera", "plotly")
    from modelloop.pipeline import Pipeline
    from modelloop.pipeline._schema import DataValidationError

    try:
        pipeline = Pipeline.from_file(file, set_ or [])
        _check_executor(executor, ray_address, "tune" in pipeline.step_names)
        client = cli_client()
        result = _run_with_progress(
            pipeline, client, no_cache, workers, as_json, executor, ray_address
        )
    except DataValidationError as exc:
        text = str(exc).removeprefix("data validation failed:").lstrip()
        err_console.print(f"[bold red]data validation failed:[/] {escape(text)}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except ModelloopError as exc:
        raise fail(exc) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _summary(result, pipeline.spec.evaluation.metrics)
        for note in result.notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.gates_passed is False:
        raise typer.Exit(EXIT_GATE_FAILED)
    if result.status == "held":
        raise typer.Exit(EXIT_ALIAS_HELD)


def _check_executor(executor: str, ray_address: str | None, tunes: bool) -> None:
    """A wrong --executor, or a Ray cluster that does not answer, stops the run before any step."""
    import os

    from modelloop.exceptions import InvalidInput
    from modelloop.pipeline._tune import EXECUTORS

    if executor not in EXECUTORS:
        raise InvalidInput(f"--executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if ray_address and executor != "ray":
        raise InvalidInput("--ray-address is for --executor ray")
    if executor == "ray" and tunes:
        from modelloop.scoring._job import _probe_ray

        _probe_ray(ray_address or os.environ.get("RAY_ADDRESS") or None)


def _run_with_progress(
    pipeline: Pipeline,
    client: Client,
    no_cache: bool,
    workers: int | None,
    as_json: bool,
    executor: str = "local",
    ray_address: str | None = None,
) -> PipelineResult:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    out = err_console if as_json else console
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<10}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out,
        transient=as_json,
    )
    names = pipeline.step_names
    if "tune" in names:  # the progress display reports trials; Optuna's own log would interleave
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    with progress:
        tasks = {
            n: progress.add_task(n, total=1, start=False, status="[dim]waiting[/]") for n in names
        }

        def on_step(event: StepEvent) -> None:
            task = tasks[event.step]
            if event.state == "start":
                progress.start_task(task)
                progress.update(task, status="running")
            elif event.state == "failed":
                progress.update(task, status="[red]failed[/]")
                progress.stop_task(task)
            else:
                rec = event.record
                assert rec is not None
                status = (
                    "[cyan]cached[/]" if rec.cache_hit else f"[green]done[/] {rec.seconds:.2f}s"
                )
                progress.update(task, completed=1, status=status)
                progress.stop_task(task)

        return pipeline.run(
            client,
            no_cache=no_cache,
            workers=workers,
            on_step=on_step,
            executor=executor,
            ray_address=ray_address,
        )


def _summary(result: PipelineResult, shown: list[str]) -> None:
    steps = Table(title=f"pipeline {result.name} (run {result.run_id})")
    for col in ("step", "result", "seconds", "run", "digest"):
        steps.add_column(col)
    for s in result.steps:
        steps.add_row(
            *row(
                s.name,
                "cached" if s.cache_hit else "ran",
                f"{s.seconds:.2f}",
                s.run_id,
                s.digest[:12],
            )
        )
    console.print(steps)
    metrics = {k: v for k, v in result.metrics.items() if not shown or k in shown}
    if metrics:
        console.print(
            "metrics  " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()), highlight=False
        )
    if result.gates:
        gates = Table(title="gates")
        for col in ("gate", "value", "bound", "passed", "reason"):
            gates.add_column(col)
        for g in result.gates:
            value = "-" if g.get("value") is None else f"{g['value']:.4g}"
            bound = "-" if g.get("bound") is None else f"{g['bound']:.4g}"
            ok = "[green]yes[/]" if g["passed"] else "[red]NO[/]"
            gates.add_row(*row(g["expr"], value, bound), ok, *row(g.get("reason", "")))
        console.print(gates)
    _validation(result)
    if result.status == "held":
        console.print(
            f"[bold yellow]registered {escape(str(result.model_name))} version "
            f"{result.registered_version}, alias held:[/] {escape(result.reason or '')}  "
            f"({result.seconds:.1f} s)"
        )
    elif result.status == "unchanged":
        console.print(
            f"[bold]nothing registered:[/] {escape(result.reason or '')}  ({result.seconds:.1f} s)"
        )
    elif result.registered_version is not None:
        alias = f" as @{result.alias}" if result.alias else ""
        console.print(
            f"[bold green]registered {escape(str(result.model_name))} version "
            f"{result.registered_version}{escape(alias)}[/]  ({result.seconds:.1f} s)"
        )
    if result.registered_version is not None:
        if result.onnx is not None and result.onnx["converted"]:
            console.print(
                f"ONNX form attached (agrees with scikit-learn on {result.onnx['check_rows']} "
                "test rows)"
            )
        elif result.onnx is not None:
            console.print(
                f"[yellow]not converted to ONNX:[/] {escape(result.onnx['reason'])} "
                "(served by scikit-learn)"
            )
    elif result.status != "unchanged":
        console.print(
            f"[bold yellow]not registered:[/] {escape(result.reason or '')}  "
            f"({result.seconds:.1f} s)"
        )


def _validation(result: PipelineResult) -> None:
    """What the data was checked against, and each soft problem it had."""
    v = result.validation
    if not v:
        return
    reference = v.get("reference")
    soft = result.soft_problems
    if reference is None:
        console.print("[dim]data not validated (validation.reference: none or disabled)[/]")
        return
    if not soft:
        console.print(f"data validated against {escape(str(reference))}: no problems")
        return
    console.print(
        f"[bold yellow]data validated against {escape(str(reference))}: {len(soft)} soft "
        f"problem(s)[/] (validation.on_soft: {escape(str(v.get('policy')))})"
    )
    for line in soft:
        console.print(f"  [yellow]-[/] {escape(line)}", highlight=False)
