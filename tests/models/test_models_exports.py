"""The public surface of modelloop.models, locked so that changes to it are deliberate."""

from __future__ import annotations

import subprocess
import sys

import modelloop.models


def test_exported_names() -> None:
    assert set(modelloop.models.__all__) == {
        "MODEL_LOCAL_TRUSTED_TYPES",
        "ColumnSpec",
        "ModelPackage",
        "Signature",
        "infer_signature",
        "load_model",
        "save_model",
    }
    for name in modelloop.models.__all__:
        obj = getattr(modelloop.models, name)
        assert name.isupper() or obj.__doc__, f"{name} has no docstring"


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, modelloop.models\n"
        "print(sorted(m for m in ('pandas', 'sklearn', 'skops', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
