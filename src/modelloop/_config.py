"""Settings read from the environment, resolved once per client — never a mutable global."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "HOME_DIR_NAME",
    "HomeOrigin",
    "Settings",
    "find_home",
    "is_server_url",
    "redact_url",
]

#: Types a skops model file may contain beyond skops' own safe defaults. The list lives here, in
#: modelloop's configuration, and never comes from the artifact being loaded. Users extend it with
#: ``MODELLOOP_TRUSTED_TYPES`` (comma separated) or ``Settings(trusted_types=...)``.
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "collections.OrderedDict",
    "collections.defaultdict",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator",
    "numpy.random._pcg64.PCG64",
    "numpy.random.bit_generator.SeedSequence",
    "builtins.slice",
    "functools.partial",
)


#: The folder modelloop keeps its store in when ``MODELLOOP_HOME`` is not set.
HOME_DIR_NAME = ".modelloop"

#: How the home folder was chosen: ``env`` (``MODELLOOP_HOME``), ``given`` (by the caller),
#: ``here`` (``./.modelloop`` exists), ``parent`` (``.modelloop`` of a parent folder), ``new``
#: (none found: ``./.modelloop``, created on first use).
HomeOrigin = Literal["env", "given", "here", "parent", "new"]


def find_home(start: str | os.PathLike[str] | None = None) -> tuple[Path, HomeOrigin]:
    """The nearest existing ``.modelloop`` folder in ``start`` (default: the current folder) or
    one of its parents, as git finds ``.git``; else ``<start>/.modelloop``, marked ``new``."""
    here = Path(start if start is not None else Path.cwd()).expanduser().absolute()
    for folder in (here, *here.parents):
        if (folder / HOME_DIR_NAME).is_dir():
            return folder / HOME_DIR_NAME, "here" if folder == here else "parent"
    return here / HOME_DIR_NAME, "new"


def _home_from_env() -> tuple[Path, HomeOrigin]:
    if os.environ.get("MODELLOOP_HOME"):
        return Path(os.environ["MODELLOOP_HOME"]), "env"  # normalised in __post_init__
    return find_home()


@dataclass(frozen=True)
class Settings:
    """Where modelloop keeps its metadata and artifacts, and whom it acts for.

    ``Settings.from_env()`` reads ``MODELLOOP_HOME`` (default: the nearest ``.modelloop`` folder
    in the current folder or its parents, else ``./.modelloop``), ``MODELLOOP_STORE_URL``
    (default: a SQLite file in the home), ``MODELLOOP_ARTIFACT_ROOT`` (default:
    ``<home>/artifacts``), ``MODELLOOP_TRUSTED_TYPES``, ``MODELLOOP_USER``, the artifact
    encryption keys (``MODELLOOP_ENCRYPTION_KEY`` or ``_KEY_FILE``; for reads also
    ``MODELLOOP_ENCRYPTION_OLD_KEYS`` and ``_OLD_KEY_FILES``), and for a store URL that names a
    modelloop server (``http(s)://``) ``MODELLOOP_TOKEN`` (the bearer token) and
    ``MODELLOOP_CA_BUNDLE`` (a PEM file of a private CA to trust). Without a
    ``home``, ``Settings()`` chooses it the same way; ``home_origin`` says how it was chosen.
    """

    home: Path = None  # type: ignore[assignment]  # None: chosen as from_env does
    store_url: str | None = None
    artifact_root: str | None = None
    trusted_types: tuple[str, ...] = DEFAULT_TRUSTED_TYPES
    user: str = field(default_factory=lambda: os.environ.get("MODELLOOP_USER") or _login())
    home_origin: HomeOrigin = field(default="given", compare=False)
    #: Encryption at rest of artifact blobs (see :mod:`modelloop.artifacts._crypto`): the key new
    #: blobs are written with, as base64 text or a key file, and other keys accepted for reads.
    #: Keys are never shown by ``repr``.
    encryption_key: str | None = field(default=None, repr=False)
    encryption_key_file: str | None = None
    encryption_old_keys: tuple[str, ...] = field(default=(), repr=False)
    encryption_old_key_files: tuple[str, ...] = ()
    #: bearer token for a modelloop server (never shown in a repr)
    token: str | None = field(default=None, repr=False)
    #: PEM file of the CA that signed a modelloop server's certificate (default: system CAs)
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if self.home is None:
            home, origin = _home_from_env()
            object.__setattr__(self, "home", home)
            object.__setattr__(self, "home_origin", origin)
        # Accept a str (or any path-like) for home; keep everything downstream a Path.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        object.__setattr__(self, "trusted_types", tuple(self.trusted_types))
        object.__setattr__(self, "encryption_old_keys", tuple(self.encryption_old_keys))
        object.__setattr__(self, "encryption_old_key_files", tuple(self.encryption_old_key_files))

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from environment variables; keyword arguments take precedence."""
        extra = tuple(
            t.strip() for t in os.environ.get("MODELLOOP_TRUSTED_TYPES", "").split(",") if t.strip()
        )
        home: Path
        origin: HomeOrigin
        if "home" in overrides:  # given: no folder walk
            home, origin = overrides.pop("home"), "given"  # type: ignore[assignment]
        else:
            home, origin = _home_from_env()
        base = cls(
            home=home,
            store_url=os.environ.get("MODELLOOP_STORE_URL") or None,
            artifact_root=os.environ.get("MODELLOOP_ARTIFACT_ROOT") or None,
            trusted_types=DEFAULT_TRUSTED_TYPES + extra,
            home_origin=origin,
            encryption_key=os.environ.get("MODELLOOP_ENCRYPTION_KEY") or None,
            encryption_key_file=os.environ.get("MODELLOOP_ENCRYPTION_KEY_FILE") or None,
            encryption_old_keys=_split(os.environ.get("MODELLOOP_ENCRYPTION_OLD_KEYS"), ","),
            encryption_old_key_files=_split(
                os.environ.get("MODELLOOP_ENCRYPTION_OLD_KEY_FILES"), os.pathsep
            ),
            token=os.environ.get("MODELLOOP_TOKEN") or None,
            ca_bundle=os.environ.get("MODELLOOP_CA_BUNDLE") or None,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def resolved_store_url(self) -> str:
        """The SQLAlchemy URL of the metadata store."""
        return self.store_url or f"sqlite:///{self.home / 'modelloop.db'}"

    @property
    def remote(self) -> bool:
        """Whether the store is a modelloop server (``http(s)://``): artifacts then go through
        it too, and ``artifact_root`` is not used."""
        return is_server_url(self.store_url)

    @property
    def resolved_artifact_root(self) -> str:
        """The fsspec URL (or local path) under which artifacts are stored."""
        return self.artifact_root or str(self.home / "artifacts")


def is_server_url(url: str | None) -> bool:
    """Whether a store URL names a modelloop server (``http(s)://``) rather than a database."""
    return bool(url) and str(url).lower().startswith(("http://", "https://"))


def _split(value: str | None, sep: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(sep) if v.strip())


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def redact_url(url: str) -> str:
    """A store URL fit to print or log: any password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url
