"""Model URIs: ``models:/name@alias``, ``models:/name/3``, ``models:/name`` (latest) and
``runs:/<run_id>/<path>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelloop._names import ALIAS_PATTERN, MODEL_NAME_PATTERN, check_alias, check_model_name
from modelloop.exceptions import InvalidInput

__all__ = ["ModelRef", "RunArtifactRef", "parse_model_spec", "parse_model_uri"]

_NAME = MODEL_NAME_PATTERN
_ALIAS = ALIAS_PATTERN
_MODELS = re.compile(rf"^models:/({_NAME})(?:@({_ALIAS})|/([0-9]+))?$")
_RUNS = re.compile(r"^runs:/([0-9a-f]{32})/(.+)$")
_SPEC = re.compile(rf"^({_NAME})(?:@({_ALIAS})|/([0-9]+))?$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model and one way to pick its version: an alias, a number, or the latest."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}"


@dataclass(frozen=True, slots=True)
class RunArtifactRef:
    """A path inside a run's artifacts."""

    run_id: str
    path: str

    def __str__(self) -> str:
        return f"runs:/{self.run_id}/{self.path}"


def _ref(m: re.Match[str]) -> ModelRef:
    name, alias, version = m.group(1), m.group(2), m.group(3)
    check_model_name(name)
    if alias:
        check_alias(alias)
    return ModelRef(name, alias, int(version) if version else None)


def parse_model_uri(uri: str) -> ModelRef | RunArtifactRef:
    """Parse a model URI, or raise ``InvalidInput`` saying what form was expected."""
    if m := _MODELS.match(uri):
        return _ref(m)
    if m := _RUNS.match(uri):
        from modelloop.artifacts import validate_artifact_path

        return RunArtifactRef(m.group(1), validate_artifact_path(m.group(2)))
    raise InvalidInput(
        f"not a model URI: {uri!r} (expected models:/NAME@ALIAS, models:/NAME/VERSION, "
        "models:/NAME or runs:/RUN_ID/PATH)"
    )


def parse_model_spec(spec: str) -> ModelRef:
    """Parse the CLI short form ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` (or a models:/ URI)."""
    if spec.startswith("models:/"):
        ref = parse_model_uri(spec)
        assert isinstance(ref, ModelRef)
        return ref
    if m := _SPEC.match(spec):
        return _ref(m)
    raise InvalidInput(f"not a model name: {spec!r} (expected NAME, NAME@ALIAS or NAME/VERSION)")
