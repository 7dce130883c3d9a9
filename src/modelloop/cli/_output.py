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

    from modelloop._client import Client
    from modelloop._config import Settings

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


def store_note(settings: Settings, *, writes: bool = True) -> str | None:
    """What to tell on stderr about the store in use: when it was found in a parent folder
    (for a command that writes) or is new; None when it is the one a user expects."""
    from modelloop._config import HOME_DIR_NAME, redact_url

    home = settings.home
    # with MODELLOOP_STORE_URL, the home holds only local files (logs, caches, maybe artifacts)
    what = "store" if settings.store_url is None else "home folder"
    elsewhere = (
        "" if settings.store_url is None else f"; the store is {redact_url(settings.store_url)}"
    )
    if settings.home_origin == "new":
        return (
            f"no {HOME_DIR_NAME} folder in {home.parent} or its parents: using a new {what} in "
            f"{home}{elsewhere} (set MODELLOOP_HOME, or run from the folder that holds your "
            "store)"
        )
    if settings.home_origin == "parent" and writes:
        return (
            f"using the {what} in {home} (found in a parent folder; MODELLOOP_HOME "
            f"overrides){elsewhere}"
        )
    return None


def tell_store(settings: Settings, *, writes: bool = True) -> None:
    """Print :func:`store_note` on stderr, if any (stdout stays clean for ``--json``)."""
    note = store_note(settings, writes=writes)
    if note:
        err_console.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def cli_client(*, writes: bool = True) -> Client:
    """The client of the current settings, after telling which store it uses where that may
    surprise (see :func:`store_note`)."""
    from modelloop._client import default_client
    from modelloop._config import Settings

    settings = Settings.from_env()  # found afresh: a cached client's origin may be older
    tell_store(settings, writes=writes)
    return default_client(settings)


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


def read_frame(location: str | Path) -> pd.DataFrame:
    """A data file given on the command line (.parquet, else CSV), a local path or a URL
    (``s3://bucket/key.parquet``, ``file:///...``), or ``InvalidInput`` naming it."""
    import pandas as pd

    from modelloop._fs import is_url, url_suffix
    from modelloop.exceptions import InvalidInput

    text = str(location)
    if not is_url(text) and not Path(text).is_file():
        raise InvalidInput(f"no such data file: {text}")
    parquet = url_suffix(text) == ".parquet"
    try:
        return pd.read_parquet(text) if parquet else pd.read_csv(text)
    except FileNotFoundError:
        raise InvalidInput(f"no such data file: {text}") from None
    except ImportError as exc:  # fsspec has no file system for this protocol installed
        raise InvalidInput(
            f"cannot read {text}: {exc} (for s3:// URLs: pip install 'modelloop[s3]')"
        ) from None
