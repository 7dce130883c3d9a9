"""Artifacts: content-addressed blobs on a local directory or S3; the artifact-path validator."""

from __future__ import annotations

from modelloop.artifacts._paths import validate_artifact_path
from modelloop.artifacts._store import ArtifactStore, BlobInfo

__all__ = ["ArtifactStore", "BlobInfo", "validate_artifact_path"]
