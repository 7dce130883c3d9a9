"""The ``modelloop`` command: a thin layer that parses, calls the library, and prints."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelloop._config import redact_url
from modelloop.cli._access import audit_app, tokens_app, users_app
from modelloop.cli._ci import ci_app
from modelloop.cli._demo import demo_app
from modelloop.cli._deploy import deploy_app
from modelloop.cli._keys import keys_app
from modelloop.cli._loop import loop_app
from modelloop.cli._models import models_app
from modelloop.cli._monitor import monitor_app
from modelloop.cli._ops import ops_app
from modelloop.cli._output import JsonOpt, cli_client, console, fail, print_json
from modelloop.cli._pipeline import pipeline_app
from modelloop.cli._runs import experiments_app, runs_app
from modelloop.cli._score import score_command
from modelloop.cli._serve import serve_command
from modelloop.cli._server import server_command
from modelloop.cli._ui import ui_command
from modelloop.exceptions import ModelloopError

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Turns every library error raised below into one message on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context; its base class is private
        try:
            return super().invoke(ctx)
        except ModelloopError as exc:
            raise fail(exc) from None


app = typer.Typer(
    cls=_Group,
    name="modelloop",
    help="Track, register, serve, monitor and retrain models as one closed loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Metadata store administration.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(experiments_app, name="experiments")
app.add_typer(models_app, name="models")
app.add_typer(monitor_app, name="monitor")
app.add_typer(ops_app, name="ops")
app.add_typer(deploy_app, name="deploy")
app.add_typer(demo_app, name="demo")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(loop_app, name="loop")
app.add_typer(ci_app, name="ci")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(audit_app, name="audit")
app.command("serve")(serve_command)
app.command("score")(score_command)
app.command("server")(server_command)
app.command("ui")(ui_command)


def _version(value: bool) -> None:
    if value:
        from modelloop import __version__

        typer.echo(f"modelloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Track, register, serve, monitor and retrain models as one closed loop.

    Settings come from MODELLOOP_HOME (default: the nearest .modelloop folder in the current
    folder or its parents, as git finds .git; else a new ./.modelloop), MODELLOOP_STORE_URL and
    MODELLOOP_ARTIFACT_ROOT. A command says on stderr which store it uses when that store was
    found in a parent folder or is new.
    """


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Create or migrate the metadata store schema to the newest revision."""
    client = cli_client()
    revision = client.store.upgrade()
    url = client.settings.resolved_store_url
    if as_json:
        print_json({"store_url": redact_url(url), "revision": revision})
    else:
        console.print(f"store {redact_url(url)} at revision {revision}")


@app.command()
def gc(
    older_than: Annotated[
        float, typer.Option("--older-than", help="Only leftovers older than this many seconds.")
    ] = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Remove leftovers of interrupted writes (temporary blobs, half-built model caches)."""
    removed = cli_client().cleanup(older_than)
    if as_json:
        print_json(removed)
    else:
        console.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in removed.items()))


@app.command()
def quickstart(
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = "flights-delay",
    experiment: Annotated[str, typer.Option(help="Experiment name.")] = "flights",
    as_json: JsonOpt = False,
) -> None:
    """Train a flight-delay model on NYC flights Jan-Feb 2013, log it, register it as champion."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelloop.demo import QUICKSTART_STEPS, run_quickstart

    client = cli_client()
    client.artifacts.check_writable()  # a missing bucket is found now, not after training
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console if not as_json else type(console)(stderr=True),
        transient=as_json,
    )
    with progress:
        task = progress.add_task("quickstart", total=len(QUICKSTART_STEPS))
        done = [0]

        def on_step(name: str) -> None:
            progress.update(task, completed=done[0], description=name)
            done[0] += 1

        result = run_quickstart(
            client, experiment=experiment, model_name=model_name, on_step=on_step
        )
        progress.update(task, completed=len(QUICKSTART_STEPS), description="done")
    if as_json:
        print_json(result)
        return
    later = ", ".join(f"{m}: {v:.3f}" for m, v in sorted(result.auc_by_month.items()))
    console.print(
        f"\n[bold green]Registered {result.model_name} version {result.version}[/] "
        f"as @{result.alias}\n"
        f"  run          {result.run_id} (experiment {result.experiment})\n"
        f"  AUC          {result.auc:.4f} on Feb 15-28 (accuracy {result.accuracy:.4f}; "
        f"{result.train_rows} train / {result.test_rows} test rows)\n"
        f"  later months AUC {later}\n"
        f"  dataset      sha256 {result.dataset_digest[:16]}…\n"
        f"  store        {redact_url(result.store_url)}\n"
        f"  artifacts    {result.artifact_root}\n"
        f"  took         {result.seconds:.1f} s\n"
        f"Next: modelloop runs show {result.run_id}   ·   modelloop models show "
        f"{result.model_name}",
        highlight=False,
    )


def main() -> None:
    """Console entry point."""
    app()
