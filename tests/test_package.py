"""The package surface: exported names are locked, and importing stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import modelloop
from modelloop import exceptions


def test_exported_names_are_locked() -> None:
    assert sorted(modelloop.__all__) == sorted(
        [
            "ActiveRun",
            "ArtifactCorrupted",
            "Client",
            "Conflict",
            "Forbidden",
            "InvalidInput",
            "ModelloopError",
            "NotFound",
            "SchemaMismatch",
            "ServiceUnavailable",
            "Settings",
            "StoreError",
            "Unauthorized",
            "UnsafeArtifact",
            "__version__",
            "get_run",
            "load_model",
            "register_model",
            "search_runs",
            "set_alias",
            "start_run",
        ]
    )
    for name in modelloop.__all__:
        assert getattr(modelloop, name) is not None


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, json, modelloop; "
        "print(json.dumps(sorted(m for m in ('pandas','sklearn','sqlalchemy','numpy','skops',"
        "'fsspec','typer','scipy') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_every_error_maps_to_one_status_and_exit_code() -> None:
    classes = [
        obj
        for obj in vars(exceptions).values()
        if isinstance(obj, type) and issubclass(obj, exceptions.ModelloopError)
    ]
    assert len(classes) == len(exceptions.__all__)
    codes = {c.exit_code for c in classes if c is not exceptions.SchemaMismatch}
    assert len(codes) == len(classes) - 1  # SchemaMismatch shares InvalidInput's code
    assert all(400 <= c.http_status < 600 for c in classes)
