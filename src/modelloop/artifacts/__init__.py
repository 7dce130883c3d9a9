"""Artifacts: content-addressed blobs on a local directory or S3, optionally encrypted at rest;
the artifact-path validator; key rotation."""

from __future__ import annotations

from modelloop.artifacts._crypto import EncryptionKey, Keyring
from modelloop.artifacts._paths import validate_artifact_path
from modelloop.artifacts._rotate import KeyStatus, RotationReport, key_status, rotate_keys
from modelloop.artifacts._store import ArtifactStore, BlobInfo

__all__ = [
    "ArtifactStore",
    "BlobInfo",
    "EncryptionKey",
    "KeyStatus",
    "Keyring",
    "RotationReport",
    "key_status",
    "rotate_keys",
    "validate_artifact_path",
]
