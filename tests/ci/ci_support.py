"""Helpers for the CI tests: a copy of the flights example as a team's repository, and the
``modelloop`` command run as a real process from this checkout's source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
FLIGHTS = ROOT / "examples" / "flights"

#: A quick version of the example (a sample of flights, a short fit, two tuning trials): the
#: kind of change a team commits to try something.
QUICK: dict[str, Any] = {
    ("data", "args", "sample"): 3000,
    ("model", "params", "max_iter"): 30,
    ("tune", "n_trials"): 2,
    ("explain", "max_rows"): 100,
    ("explain", "n_local"): 3,
}


def source_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with this checkout's ``src`` first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "250"  # Rich wraps at 80 columns without a terminal
    env.update(extra or {})
    return env


def modelloop(
    args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``modelloop ARGS`` in ``cwd`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        cwd=cwd,
        env=source_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def edit_pipeline(path: Path, changes: Mapping[tuple[Any, ...], Any]) -> None:
    """Set ``changes`` (key path → value; an int in the path indexes a list) in a YAML file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for keys, value in changes.items():
        node = doc
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def copy_example(repo: Path, *, quick: bool = True) -> Path:
    """The flights example (its pipeline file and code) as the root of a repository."""
    repo.mkdir(parents=True)
    for name in ("modelloop.yaml", "flights_model.py"):
        shutil.copy(FLIGHTS / name, repo / name)
    if quick:
        edit_pipeline(repo / "modelloop.yaml", QUICK)
    return repo
