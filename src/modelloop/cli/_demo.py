"""``modelloop demo``: traffic from the bundled flights data, for trying the loop locally."""

from __future__ import annotations

from typing import Annotated

import typer

from modelloop.cli._output import JsonOpt, cli_client, console, print_json
from modelloop.exceptions import InvalidInput

demo_app = typer.Typer(help="Demo traffic from the bundled NYC flights data.", no_args_is_help=True)


def _months(spec: str) -> list[int]:
    try:
        return [int(m) for m in spec.split(",") if m.strip()]
    except ValueError:
        raise InvalidInput(f"bad --months {spec!r}: use e.g. 6,7") from None


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
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
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
