"""modelloop: track, register, serve, monitor and retrain models as one closed loop.

``import modelloop`` is cheap: the public names below load their modules on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelloop._lazy import lazy_exports
from modelloop.exceptions import (
    ArtifactCorrupted,
    Conflict,
    Forbidden,
    InvalidInput,
    ModelloopError,
    NotFound,
    SchemaMismatch,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
    UnsafeArtifact,
)

__version__ = "0.1.0"

__all__ = [
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

_LAZY = {
    "ActiveRun": "modelloop.tracking",
    "Client": "modelloop._client",
    "Settings": "modelloop._config",
    "get_run": "modelloop._api",
    "load_model": "modelloop._api",
    "register_model": "modelloop._api",
    "search_runs": "modelloop._api",
    "set_alias": "modelloop._api",
    "start_run": "modelloop._api",
}

if TYPE_CHECKING:
    from modelloop._api import (
        get_run,
        load_model,
        register_model,
        search_runs,
        set_alias,
        start_run,
    )
    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.tracking import ActiveRun


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
