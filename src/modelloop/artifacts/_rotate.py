"""Key rotation and key status over a whole artifact store.

Rotation rewrites every blob that is not yet under the new key, one at a time, each atomically
(:meth:`ArtifactStore.rewrite`): a rotation stopped at any moment, even by SIGKILL, leaves every
blob whole under the old or the new key, and running it again skips the blobs already done and
finishes the rest. Readers that hold both keys read every blob throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modelloop.artifacts._crypto import EncryptionKey
from modelloop.artifacts._store import ArtifactStore
from modelloop.exceptions import ModelloopError

__all__ = ["KeyStatus", "RotationFailure", "RotationReport", "key_status", "rotate_keys"]


@dataclass(frozen=True, slots=True)
class RotationFailure:
    """A blob rotation could not rewrite, and why (the error's class and message)."""

    digest: str
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What one rotation did: blobs rewritten under ``key_id``, already under it, and failed."""

    key_id: str
    rotated: int
    skipped: int
    failed: tuple[RotationFailure, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every blob is now under the new key."""
        return not self.failed


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """How many blobs are stored under which key id, in plaintext, or with a damaged header."""

    blobs: int
    plaintext: int
    by_key: Mapping[str, int] = field(default_factory=dict)
    damaged: tuple[str, ...] = ()


def key_status(store: ArtifactStore) -> KeyStatus:
    """Count the store's blobs by the key their header names (headers only are read)."""
    blobs = plaintext = 0
    by_key: dict[str, int] = {}
    damaged: list[str] = []
    for digest in store.digests():
        blobs += 1
        try:
            key_id = store.key_id(digest)
        except ModelloopError:
            damaged.append(digest)
            continue
        if key_id is None:
            plaintext += 1
        else:
            by_key[key_id] = by_key.get(key_id, 0) + 1
    return KeyStatus(blobs, plaintext, dict(sorted(by_key.items())), tuple(damaged))


def rotate_keys(
    store: ArtifactStore,
    new_key: EncryptionKey,
    *,
    on_blob: Callable[[str, str], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> RotationReport:
    """Rewrite every blob of ``store`` under ``new_key``; blobs are read with any key of the
    store's keyring (or as plaintext).

    A blob that cannot be read (a key missing from the keyring, damage) is left as it is and
    reported in ``failed``; the others are still rotated. ``on_blob(digest, outcome)`` is called
    after each blob with ``rotated``, ``skipped`` or ``failed``; ``on_bytes(n)`` as plaintext
    bytes are handed to the writer.
    """
    target = store.with_keyring(store.keyring.rotated_to(new_key))
    rotated = skipped = 0
    failed: list[RotationFailure] = []
    for digest in store.digests():
        try:
            if store.key_id(digest) == new_key.key_id:
                outcome = "skipped"
                skipped += 1
            else:
                target.rewrite(digest, progress=on_bytes)
                outcome = "rotated"
                rotated += 1
        except ModelloopError as exc:
            failed.append(RotationFailure(digest, type(exc).__name__, str(exc)))
            outcome = "failed"
        if on_blob is not None:
            on_blob(digest, outcome)
    return RotationReport(new_key.key_id, rotated, skipped, tuple(failed))
