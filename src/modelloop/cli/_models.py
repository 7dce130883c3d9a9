"""``modelloop models``: registered models, versions and aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import (
    JsonOpt,
    cli_client,
    console,
    err_console,
    fmt_time,
    print_json,
    row,
)
from modelloop.registry._onnx import ONNX_TAG

models_app = typer.Typer(help="Registered models, versions and aliases.", no_args_is_help=True)
alias_app = typer.Typer(help="Move or remove aliases such as champion.", no_args_is_help=True)
models_app.add_typer(alias_app, name="alias")


@models_app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """List registered models with their latest version and aliases."""
    models = cli_client(writes=False).list_registered_models()
    if as_json:
        print_json({"models": models})
        return
    table = Table(title=f"{len(models)} model(s)")
    for col in ("name", "latest", "aliases", "updated"):
        table.add_column(col)
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items()))
        table.add_row(*row(m.name, m.latest_version, aliases, fmt_time(m.updated_at)))
    console.print(table)


@models_app.command("show")
def show_model(
    name: Annotated[
        str, typer.Argument(help="NAME (every version), or NAME@ALIAS or NAME/VERSION (one).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show a model's versions, aliases and the runs they came from."""
    from modelloop.registry._uri import parse_model_spec

    ref = parse_model_spec(name)
    client = cli_client(writes=False)
    model = client.get_registered_model(ref.name)
    if ref.alias is not None or ref.version is not None:
        versions = [client.resolve(ref)]
    else:
        versions = client.list_model_versions(ref.name)
    if as_json:
        print_json({"model": model, "versions": versions})
        return
    console.print(f"[bold]{escape(model.name)}[/]  {escape(model.description)}")
    table = Table(title="versions")
    for col in ("version", "aliases", "run", "source", "onnx", "created", "by"):
        table.add_column(col, overflow="fold")
    for v in versions:
        table.add_row(
            *row(
                v.version,
                ", ".join(v.aliases),
                v.run_id or "-",
                v.source,
                "yes" if v.tags.get(ONNX_TAG) else "-",
                fmt_time(v.created_at),
                v.user,
            )
        )
    console.print(table)


@alias_app.command("set")
def set_alias(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[int, typer.Argument(help="Version number to point at.", min=1)],
    as_json: JsonOpt = False,
) -> None:
    """Point NAME@ALIAS at VERSION (atomically; audited)."""
    before = cli_client().set_alias(name, alias, version)
    if as_json:
        print_json({"name": name, "alias": alias, "version": version, "previous": before})
        return
    moved = f"(was {before})" if before is not None else "(new)"
    console.print(f"{escape(name)}@{escape(alias)} → version {version} {moved}")


@alias_app.command("delete")
def delete_alias(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove NAME@ALIAS (audited)."""
    version = cli_client().delete_alias(name, alias)
    if as_json:
        print_json({"name": name, "alias": alias, "deleted": True, "version": version})
        return
    console.print(f"{escape(name)}@{escape(alias)} removed (pointed at version {version})")


@models_app.command("convert")
def convert_model(
    model: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION.")],
    check_data: Annotated[
        str | None,  # a URL (s3://...) must not go through pathlib
        typer.Option(
            "--check-data",
            help="Rows (.parquet or .csv; a path or a URL such as s3://bucket/key.parquet) "
            "the ONNX model must agree with scikit-learn on; "
            "extra columns are ignored, at most 10,000 rows are used. Default: the input "
            "example.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert a version to ONNX and attach it when it agrees with scikit-learn.

    The check: class labels equal and probabilities (or regression values) within 1e-5 on every
    check row, plus one row per column that admits a missing value. `modelloop serve` then
    predicts the version with onnxruntime alone (faster, and it starts without scikit-learn).
    Exits 1 when the model is declined, with the reason.
    """
    from modelloop.cli._output import read_frame

    client = cli_client()
    frame = read_frame(check_data) if check_data is not None else None
    with console.status(f"converting {escape(model)} to ONNX and checking it…"):
        result = client.convert_model(model, check_data=frame)
    if as_json:
        print_json(result)
    elif result.converted:
        console.print(
            f"{escape(result.name)} v{result.version}: ONNX form attached; it agrees with "
            f"scikit-learn on {result.check_rows} check rows ({result.seconds:.1f} s)"
        )
    else:
        console.print(
            f"{escape(result.name)} v{result.version}: not converted: {escape(result.reason)}"
        )
    if not result.converted:
        raise typer.Exit(1)


def _version_of(client: Any, spec: str) -> tuple[str, int]:
    """(name, number) of NAME/VERSION or NAME@ALIAS (NAME alone: the latest version)."""
    from modelloop.registry._uri import parse_model_spec

    mv = client.resolve(parse_model_spec(spec))
    return mv.name, mv.version


@models_app.command("card")
def model_card(
    model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="md (Markdown) or html (one self-contained page).")
    ] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the card to this file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The model card of a version: what it predicts, gates, comparison with the champion it
    was gated against, metrics (overall, per segment, fairness), top features, training data,
    signature, ONNX form and lineage — every figure as the registry stored it."""
    from modelloop.exceptions import InvalidInput
    from modelloop.registry._card import build_card

    if fmt not in ("md", "html"):
        raise InvalidInput(f"--format {fmt!r}: use md or html")
    client = cli_client(writes=False)
    card = build_card(client, *_version_of(client, model))
    if as_json:
        print_json(card.to_dict())
        return
    text = card.to_markdown() if fmt == "md" else card.to_html()
    if out is None:
        typer.echo(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"card of {escape(card.data['title'])} written to {escape(str(out))}")


@models_app.command("diff")
def model_diff(
    a: Annotated[str, typer.Argument(help="The old version: NAME/VERSION or NAME@ALIAS.")],
    b: Annotated[str, typer.Argument(help="The new version: NAME/VERSION or NAME@ALIAS.")],
    as_json: JsonOpt = False,
) -> None:
    """Compare version B with version A for review: metric deltas with 95% intervals on one
    shared test split (DeLong for AUC, a paired bootstrap otherwise), segment changes,
    signature changes (a breaking one called out), dependency and parameter changes."""
    from modelloop.registry._card import diff_markdown
    from modelloop.registry._diff import diff_versions

    client = cli_client(writes=False)
    with err_console.status("scoring both versions on the shared test split…"):
        diff = diff_versions(client, _version_of(client, a), _version_of(client, b))
    if as_json:
        print_json(diff.to_dict())
        return
    typer.echo(diff_markdown(diff.to_dict()))
