"""Model registry: versions, aliases, lineage and model URIs."""

from __future__ import annotations

from modelloop.registry._uri import ModelRef, RunArtifactRef, parse_model_spec, parse_model_uri

__all__ = ["ModelRef", "RunArtifactRef", "parse_model_spec", "parse_model_uri"]
