"""Step digests and the cache lookup: a step's digest covers its inputs (the output digests of
the steps it reads), its code and its parameters; a FINISHED step run that computed the same
digest is reused."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelloop._client import Client
    from modelloop.store import Run, RunArtifact

__all__ = [
    "CACHED_FROM_TAG",
    "CACHE_HIT_TAG",
    "INPUTS_TAG",
    "OUTPUT_DIGEST_TAG",
    "PARENT_TAG",
    "PIPELINE_TAG",
    "STEP_DIGEST_TAG",
    "STEP_TAG",
    "find_cached",
    "module_source_digest",
    "outputs_digest",
    "step_code_digest",
    "step_digest",
]

PIPELINE_TAG = "modelloop.pipeline"
PARENT_TAG = "modelloop.parent_run_id"
STEP_TAG = "modelloop.step"
STEP_DIGEST_TAG = "modelloop.step_digest"
CACHE_HIT_TAG = "modelloop.cache_hit"
INPUTS_TAG = "modelloop.step_inputs"
OUTPUT_DIGEST_TAG = "modelloop.output_digest"
CACHED_FROM_TAG = "modelloop.cached_from"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@functools.cache
def step_code_digest(fn: Callable[..., Any], modules: tuple[str, ...] = ()) -> str:
    """sha256 of a step function's source, the source of the ``modules`` it calls (every file of
    a package) and the modelloop version."""
    from modelloop import __version__

    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = f"{fn.__module__}.{fn.__qualname__}"
    h = hashlib.sha256(f"{__version__}\0{source}".encode())
    for name in modules:
        h.update(f"\0{name}\0{module_source_digest(name)}".encode())
    return h.hexdigest()


@functools.cache
def module_source_digest(name: str) -> str:
    """sha256 of a module's source file (of every ``.py`` file of a package), read without
    importing it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(name)
    if spec is None:
        return "-"
    if spec.submodule_search_locations:
        files = sorted(
            f for loc in spec.submodule_search_locations for f in Path(loc).rglob("*.py")
        )
        base = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin and spec.origin.endswith(".py"):
        files, base = [Path(spec.origin)], Path(spec.origin).parent
    else:
        return "-"
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(base) if f.is_relative_to(base) else f.name}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def step_digest(
    step: str,
    code: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str],
) -> str:
    """The cache key of one step: its name, code digest, parameters and input digests."""
    payload = {"step": step, "code": code, "params": params, "inputs": dict(inputs)}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def outputs_digest(items: Sequence[RunArtifact]) -> str:
    """sha256 over a step run's (artifact path, blob digest) pairs: its outputs' identity."""
    from modelloop._client import _manifest_digest

    return _manifest_digest("", items)  # the package digest's formula, paths taken whole


def find_cached(client: Client, experiment_id: int, digest: str) -> Run | None:
    """The newest FINISHED step run that computed ``digest`` (not itself a cache hit)."""
    page = client.store.search_runs(
        [experiment_id],
        filter=(
            f"tags.`{STEP_DIGEST_TAG}` = '{digest}' and tags.`{CACHE_HIT_TAG}` = 'false' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    return page.items[0] if page.items else None
