"""Helpers the pipeline CLI tests share."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner


def invoke_run(cli: typer.Typer, *args: str) -> Any:
    """``modelloop pipeline run ARGS`` in-process; an exception the command raises propagates."""
    return CliRunner().invoke(cli, ["pipeline", "run", *args], catch_exceptions=False)
