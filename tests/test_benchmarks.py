"""The benchmark scripts import only names the package still has (they import lazily, inside
``main``, so a rename would otherwise show only when someone next measures)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_modelloop_name_a_benchmark_imports_exists(script: Path) -> None:
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modelloop")):
            continue
        assert node.module is not None
        module = importlib.import_module(node.module)
        for alias in node.names:
            if hasattr(module, alias.name):
                continue
            try:
                importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
                missing.append(f"{node.module}.{alias.name}")
    assert missing == []


def test_the_benchmarks_are_found() -> None:
    assert {"loop.py", "server.py", "drift.py", "tracking.py"} <= {p.name for p in BENCHMARKS}
