"""``modelloop ci``: write the CI file of a repository's pipeline, and print a pipeline run's
verdict in the build log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelloop.cli._output import JsonOpt, console, err_console, print_json

ci_app = typer.Typer(
    help="Run pipelines in GitHub Actions, GitLab CI or Jenkins.", no_args_is_help=True
)


@ci_app.callback()
def _ci() -> None:
    """Run pipelines in GitHub Actions, GitLab CI or Jenkins."""


def _relative_pipeline(path: Path) -> str:
    from modelloop.exceptions import InvalidInput

    root = Path.cwd().resolve()
    full = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if not full.is_file():
        raise InvalidInput(f"--pipeline: no such file {path}")
    if not full.is_relative_to(root):
        raise InvalidInput(
            f"--pipeline: {path} is outside the current folder; run ci init from the "
            "repository's root"
        )
    return full.relative_to(root).as_posix()


@ci_app.command("init")
def ci_init(
    provider: Annotated[str, typer.Option("--provider", "-p", help="github, gitlab or jenkins.")],
    pipeline: Annotated[
        Path, typer.Option("--pipeline", help="The pipeline file, inside this repository.")
    ] = Path("modelloop.yaml"),
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model the scheduled job monitors (default: the pipeline's register section).",
        ),
    ] = None,
    branch: Annotated[str, typer.Option(help="Pushes to this branch run the pipeline.")] = "main",
    schedule: Annotated[
        str | None, typer.Option(help="Cron of the monitoring job (default: '17 6 * * *').")
    ] = None,
    window: Annotated[str, typer.Option(help="The monitoring job's window.")] = "day",
    python: Annotated[
        str | None, typer.Option(help="Python version of the job (default: this one's).")
    ] = None,
    install: Annotated[
        str | None,
        typer.Option(
            help="What pip installs (default: this modelloop version with the pipeline, "
            "monitoring, postgres and s3 extras; '.' installs the repository itself)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of the usual place.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the CI file for PROVIDER: install (pip downloads and the step cache kept between
    runs), run the pipeline against the team's store (MODELLOOP_STORE_URL, MODELLOOP_TOKEN, ...
    from the CI's secrets, never written in the file), fail the build on a gate with the reason
    in the log, keep the verdict and the model card as the build's artifact, and monitor the
    champion on a schedule (--fail-on-alert). Refuses to overwrite a file without --force."""
    from modelloop.ci import CI_PROVIDERS, DEFAULT_SCHEDULE, CiOptions, write_ci
    from modelloop.exceptions import InvalidInput

    if provider not in CI_PROVIDERS:
        raise InvalidInput(f"--provider {provider!r}: use {', '.join(CI_PROVIDERS)}")
    relative = _relative_pipeline(pipeline)
    if model is None:
        from modelloop.pipeline._spec import load_spec

        spec = load_spec(Path.cwd() / relative)
        if spec.register is None:
            raise InvalidInput(
                f"{relative} has no register section: give --model NAME for the monitoring job"
            )
        model = spec.register.model_name
    options = CiOptions(
        pipeline=relative,
        model=model,
        branch=branch,
        schedule=schedule or DEFAULT_SCHEDULE,
        window=window,
        **({"python": python} if python else {}),
        install=install or "",
    )
    path = write_ci(Path.cwd(), provider, options, out=out, force=force)
    if as_json:
        print_json({"provider": provider, "path": str(path), "options": options})
        return
    console.print(f"wrote {escape(str(path))} ({provider}) for {escape(relative)}")
    console.print(
        "Set the secrets it names (MODELLOOP_STORE_URL, MODELLOOP_ARTIFACT_ROOT, "
        "MODELLOOP_TOKEN, ...) in the CI's settings; none is written in the file.",
        highlight=False,
    )


@ci_app.command("verdict")
def ci_verdict(
    result: Annotated[Path, typer.Argument(help="The output of `pipeline run --json`.")],
    exit_code: Annotated[
        int, typer.Option("--exit-code", help="The exit code of `pipeline run`.")
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write verdict.md (and card.md, card.html) into this folder."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a pipeline run's verdict for the build log (the reason a gate failed, on GitHub as
    an error annotation), write it with the registered version's model card into the report
    folder, and add both to GitHub's job summary. Exits 0: the build's exit code is the
    pipeline's."""
    from modelloop.ci._verdict import read_verdict

    verdict = read_verdict(result, exit_code)
    text = verdict.to_markdown()
    card = None
    registered = verdict.registered
    written: list[str] = []
    if registered is not None:
        from modelloop.cli._output import cli_client
        from modelloop.registry._card import build_card

        card = build_card(cli_client(writes=False), *registered)
        if out is not None:
            written += [str(p) for p in card.write(out)]
    comparison = None
    run_id = (verdict.result or {}).get("run_id")
    if registered is None and run_id and (verdict.result or {}).get("gates_passed") is False:
        comparison = _comparison(str(run_id))
        if comparison is not None:
            text += "\n" + comparison
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "verdict.md").write_text(text, encoding="utf-8")
        written.insert(0, str(out / "verdict.md"))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n" + (card.to_markdown() if card else "") + "\n")
    if as_json:
        print_json({**verdict.__dict__, "files": written})
        return
    colour = "green" if verdict.ok else "red"
    console.print(f"[bold {colour}]modelloop: {escape(verdict.headline)}[/]", highlight=False)
    if verdict.reason:
        console.print(f"reason: {escape(verdict.reason)}", highlight=False)
        if os.environ.get("GITHUB_ACTIONS") == "true" and not verdict.ok:
            # one line GitHub shows on the run's page and the pull request
            typer.echo(f"::error title=modelloop::{verdict.reason}")
    for g in (verdict.result or {}).get("gates") or []:
        mark = "passed" if g.get("passed") else "FAILED"
        line = f"{g.get('expr')}: {g.get('reason', '')}"
        console.print(f"  {mark:6}  {escape(line)}", highlight=False)
    if comparison is not None:
        typer.echo("\n" + comparison)
    for path in written:
        err_console.print(f"wrote {escape(path)}", highlight=False)


def _comparison(pipeline_run_id: str) -> str | None:
    """The failed candidate against the champion of its gates, as Markdown; None without a
    champion. A comparison that cannot be made is said, never an error of the verdict."""
    from modelloop.cli._output import cli_client
    from modelloop.exceptions import ModelloopError
    from modelloop.registry._card import diff_markdown
    from modelloop.registry._diff import candidate_comparison

    try:
        diff = candidate_comparison(cli_client(writes=False), pipeline_run_id)
    except ModelloopError as exc:
        return f"(no comparison with the champion: {exc})"
    return None if diff is None else diff_markdown(diff.to_dict())
