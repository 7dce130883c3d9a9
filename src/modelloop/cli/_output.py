"""How the CLI prints: Rich for people, one JSON document for scripts, errors to stderr."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from modelloop.exceptions import ModelloopError

if TYPE_CHECKING:
    import pandas as pd

console = Console()
err_console = Console(stderr=True)


def to_jsonable(obj: Any) -> Any:
    """Records, mappings, enums and non-finite floats made JSON-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout (no Rich markup, no wrapping)."""
    typer.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=False))


def fail(error: ModelloopError) -> typer.Exit:
    """Report a library error on stderr; return the Exit carrying its exit code."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
    return typer.Exit(error.exit_code)


def row(*values: object) -> list[Text]:
    """Table cells shown literally: user text (names, tags, messages) is never Rich markup."""
    return [v if isinstance(v, Text) else Text(str(v)) for v in values]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fmt_time(ms: int | None) -> str:
    """Epoch milliseconds as local ISO time (seconds)."""
    if not ms:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def require_extra(extra: str, *modules: str) -> None:
    """``InvalidInput`` naming the extra to install when one of ``modules`` is missing."""
    import importlib.util

    from modelloop.exceptions import InvalidInput

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(
            f"this command needs {', '.join(missing)}: pip install 'modelloop[{extra}]'"
        )


def read_frame(path: Path) -> pd.DataFrame:
    """A data file given on the command line (.parquet, else CSV), or ``InvalidInput``."""
    import pandas as pd

    from modelloop.exceptions import InvalidInput

    if not path.is_file():
        raise InvalidInput(f"no such data file: {path}")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
