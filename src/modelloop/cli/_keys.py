"""``modelloop keys``: encryption keys of the artifact store (generate, rotate, status)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import JsonOpt, cli_client, console, err_console, print_json, row
from modelloop.exceptions import Conflict, InvalidInput

keys_app = typer.Typer(
    help="Encryption keys of the artifact store: generate a key, rotate every blob, status.",
    no_args_is_help=True,
)

#: Test hook: ``after:N`` kills the rotating process (SIGKILL), the way a crash or an OOM kill
#: would stop it, once N blobs are rotated and three more chunks (3 MiB) have gone to the writer:
#: in the middle of a blob of more than 3 MiB.
FAULT_ENV = "MODELLOOP_KEYS_FAULT"
_FAULT_CHUNKS = 3


@keys_app.command("generate")
def generate(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the key to this new file (mode 0600) instead of printing it."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a random AES-256 key: print it (base64), or write it to a 0600 key file.

    Use it as MODELLOOP_ENCRYPTION_KEY (the text) or MODELLOOP_ENCRYPTION_KEY_FILE (the file).
    """
    from modelloop.artifacts import EncryptionKey

    key = EncryptionKey.generate()
    if out is None:
        if as_json:
            print_json({"key_id": key.key_id, "key": key.to_text()})
        else:
            typer.echo(key.to_text())
            err_console.print(f"key id {key.key_id}", highlight=False)
        return
    _write_key_file(out, key.to_text())
    if as_json:
        print_json({"key_id": key.key_id, "file": str(out)})
    else:
        console.print(f"wrote key {key.key_id} to {escape(str(out))} (mode 0600)", highlight=False)


def _write_key_file(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only; never replace an existing file (a key it
    holds may be the only way to read some blobs)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(
            f"{path} exists; a key file is never overwritten (it may be the only key to some "
            "blobs): choose another path"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot create the key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


@keys_app.command("rotate")
def rotate(
    new_key_file: Annotated[
        Path,
        typer.Option("--new-key-file", help="The key file every blob is re-encrypted with."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt every blob under the key in --new-key-file.

    Blobs are read with the current settings' keys (MODELLOOP_ENCRYPTION_KEY[_FILE] and
    MODELLOOP_ENCRYPTION_OLD_KEYS / _OLD_KEY_FILES) or as plaintext. Each blob is replaced
    atomically, so an interrupted rotation leaves every blob readable with the old or the new
    key; run it again to finish. Afterwards, make the new key MODELLOOP_ENCRYPTION_KEY_FILE.
    Exits 1 when a blob could not be rotated (listed in the summary).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from modelloop.artifacts import EncryptionKey, rotate_keys
    from modelloop.artifacts._crypto import require_cryptography

    new_key = EncryptionKey.from_file(new_key_file)
    require_cryptography()
    store = cli_client().artifacts
    kill_after = _fault_after()
    done = {"rotated": 0, "chunks": 0}

    def on_bytes(_: int) -> None:
        if kill_after is not None and done["rotated"] >= kill_after:
            done["chunks"] += 1
            if done["chunks"] >= _FAULT_CHUNKS:
                _die()

    show = console.is_terminal and not as_json
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    with progress:
        task = progress.add_task(
            "rotating", total=sum(1 for _ in store.digests()) if show else None
        )

        def on_blob(_: str, outcome: str) -> None:
            progress.advance(task)
            if outcome == "rotated":
                done["rotated"] += 1

        report = rotate_keys(store, new_key, on_blob=on_blob, on_bytes=on_bytes)
    if as_json:
        print_json(
            {
                "key_id": report.key_id,
                "rotated": report.rotated,
                "skipped": report.skipped,
                "failed": len(report.failed),
                "failures": report.failed,
            }
        )
    else:
        console.print(
            f"key {report.key_id}: {report.rotated} blobs rotated, {report.skipped} already "
            f"under it, {len(report.failed)} failed",
            highlight=False,
        )
        for failure in report.failed:
            err_console.print(
                f"[red]failed[/] {failure.digest}: {escape(failure.message)}", highlight=False
            )
    if report.failed:
        raise typer.Exit(1)


def _fault_after() -> int | None:
    value = os.environ.get(FAULT_ENV)
    if not value:
        return None
    kind, _, count = value.partition(":")
    if kind != "after" or not count.isdigit():
        raise InvalidInput(f"{FAULT_ENV} must be after:N (N a whole number), not {value!r}")
    return int(count)


def _die() -> None:
    """Stop at once, as a crash would: no cleanup, no finally blocks."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


@keys_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """How many blobs are under which key id, and how many are plaintext."""
    from modelloop.artifacts import key_status

    store = cli_client(writes=False).artifacts
    found = key_status(store)
    current = store.keyring.current.key_id if store.keyring.current else None
    held = {k.key_id for k in store.keyring.keys}
    if as_json:
        print_json(
            {
                "blobs": found.blobs,
                "plaintext": found.plaintext,
                "by_key": dict(found.by_key),
                "damaged": list(found.damaged),
                "current_key_id": current,
                "readable_key_ids": sorted(held),
            }
        )
        return
    table = Table("key id", "role", "blobs")
    for key_id, count in found.by_key.items():
        role = "current" if key_id == current else "read key" if key_id in held else "NOT HELD"
        table.add_row(*row(key_id, role, count))
    if found.plaintext:
        table.add_row(*row("-", "plaintext", found.plaintext))
    if found.damaged:
        table.add_row(*row("-", "damaged header", len(found.damaged)))
    console.print(table)
    console.print(
        f"{found.blobs} blobs in {escape(store.root)}; new blobs are "
        + (f"encrypted with key {current}" if current else "written in plaintext (no key set)"),
        highlight=False,
    )
