"""``modelloop score``: batch scoring of Parquet/CSV files with a registered version."""

from __future__ import annotations

from typing import Annotated

import typer

from modelloop.cli._output import JsonOpt


def score_command(
    model: Annotated[
        str, typer.Argument(help="The version to score with: NAME@ALIAS, NAME/VERSION or NAME.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Parquet or CSV input: a file, a folder or a glob, local or s3://.",
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="Output folder (local or s3://): Parquet parts, refused rows under _rejected/. "
            "Running again with the same --out skips the parts already finished.",
        ),
    ],
    executor: Annotated[
        str, typer.Option("--executor", help="local (processes here) or ray (a Ray cluster).")
    ] = "local",
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes (local) or Ray actors (ray).")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster address (ray.init(address=...)); default RAY_ADDRESS, else a "
            "local Ray started for this job.",
        ),
    ] = None,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, help="Rows read, validated and predicted at once.")
    ] = 262_144,
    part_rows: Annotated[
        int,
        typer.Option(
            "--part-rows",
            min=1,
            help="Rows per part (the unit of work and restart; whole Parquet row groups).",
        ),
    ] = 1_000_000,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="Input column to copy into the output (repeatable)."),
    ] = None,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx",
            help="Default: the version's registered ONNX form predicts when it has one, else "
            "scikit-learn. --onnx requires the ONNX form; --no-onnx never uses it.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Score files with a registered model: streamed in batches, validated against its
    signature (refused rows listed with their row numbers under OUT/_rejected), written as
    Parquet with the model version and a row id (source_file, source_row); restartable."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from modelloop.cli._output import cli_client, console, err_console, print_json
    from modelloop.exceptions import InvalidInput
    from modelloop.scoring import score_batch

    if executor not in ("local", "ray"):
        raise InvalidInput(f"--executor must be local or ray, got {executor!r}")
    client = cli_client(writes=False)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=err_console if as_json else console,
        transient=as_json,
    )
    task = progress.add_task("score", total=None)

    def on_start(total: int | None, parts: int) -> None:
        progress.update(task, total=total)

    def on_rows(n: int) -> None:
        progress.advance(task, n)

    with progress:
        summary = score_batch(
            model,
            data,
            out,
            executor=executor,  # type: ignore[arg-type]
            workers=workers,
            ray_address=ray_address,
            batch_rows=batch_rows,
            part_rows=part_rows,
            keep=keep or (),
            onnx=onnx,
            client=client,
            on_start=on_start,
            on_rows=on_rows,
        )
    if as_json:
        print_json(summary.to_dict())
        return
    for note in summary.notes:
        err_console.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    console.print(
        f"scored {summary.rows_in:,} rows with {summary.model}/{summary.version} "
        f"({summary.form}, {summary.executor} x{summary.workers}) in {summary.seconds:.1f} s "
        f"({summary.rows_per_s:,.0f} rows/s): {summary.rows_out:,} written, "
        f"{summary.rows_rejected:,} refused\n"
        f"  parts    {summary.parts_done} done, {summary.parts_skipped} finished before "
        f"(of {summary.parts})\n"
        f"  output   {summary.out} ({summary.total_rows_out:,} rows in all)",
        highlight=False,
        markup=False,
        soft_wrap=True,  # paths stay whole, to be copied
    )
    if summary.total_rows_rejected:
        cols = ", ".join(f"{c}: {n}" for c, n in sorted(summary.rejected_by_column.items()))
        console.print(
            f"  refused  {summary.total_rows_rejected:,} rows, listed with their row numbers "
            f"in {summary.rejected_path}" + (f" ({cols})" if cols else ""),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
