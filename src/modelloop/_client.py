"""The client: one object that ties the metadata store, the artifact store and settings together.

Pass a :class:`Client` around explicitly, or use the module-level functions of :mod:`modelloop`,
which use a client built from the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop._config import Settings
from modelloop._names import check_model_name
from modelloop.exceptions import ArtifactCorrupted, InvalidInput, NotFound, StoreError
from modelloop.registry._uri import ModelRef, RunArtifactRef, parse_model_uri
from modelloop.store import (
    Dataset,
    Metric,
    ModelVersion,
    Page,
    RegisteredModel,
    Run,
    RunArtifact,
    Store,
    get_store,
)
from modelloop.store._owner import current_owner
from modelloop.tracking._run import ActiveRun

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.artifacts import ArtifactStore
    from modelloop.models import ModelPackage, Signature
    from modelloop.registry._onnx import OnnxConversion

__all__ = ["DATASET_TAG", "PACKAGE_TAG", "Client", "default_client"]

#: Version tag pinning the content of the registered package (sha256 of its file manifest).
PACKAGE_TAG = "modelloop.package_digest"
#: Version tag naming the digest of the training dataset of the version's run.
DATASET_TAG = "modelloop.dataset_digest"


class Client:
    """Tracking and registry operations over one metadata store and one artifact store.

    Thread-safe: share one client between threads. Stores are opened on first use.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        from modelloop.artifacts import ArtifactStore, Keyring

        self.settings = settings or Settings.from_env()
        if self.settings.remote and (store is None or artifacts is None):
            store, artifacts = _server_stores(self.settings, store, artifacts)
        #: The metadata store (opened lazily, migrated on first use).
        self.store: Store = store or get_store(self.settings.resolved_store_url)
        #: The content-addressed artifact store, encrypting when the settings hold a key.
        self.artifacts: ArtifactStore = artifacts or ArtifactStore(
            self.settings.resolved_artifact_root, keyring=Keyring.from_settings(self.settings)
        )

    def close(self) -> None:
        """Release database connections."""
        self.store.close()

    def cleanup(self, older_than_s: float = 3600.0) -> dict[str, int]:
        """Remove leftovers of interrupted writes older than ``older_than_s``: temporary blobs
        in the artifact store, and half-built or replaced folders in the local model cache."""
        import time

        cutoff = time.time() - older_than_s
        removed = 0
        cache = self.settings.home / "cache" / "models"
        for entry in cache.glob(".*") if cache.is_dir() else ():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)
                    removed += 1
        return {
            "artifact_temp_files": self.artifacts.cleanup_temp(older_than_s),
            "model_cache_leftovers": removed,
        }

    # -- runs --------------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str = "default",
        *,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        flush_every: int = 1000,
        flush_interval: float = 5.0,
    ) -> ActiveRun:
        """Start a run in ``experiment`` (created if missing); use the result as a context
        manager."""
        exp = self.store.get_or_create_experiment(experiment)
        run = self.store.create_run(
            exp.experiment_id,
            name=name,
            user=self.settings.user,
            tags={k: str(v) for k, v in (tags or {}).items()},
            owner=current_owner(),
        )
        return ActiveRun(self, run, flush_every=flush_every, flush_interval=flush_interval)

    def get_run(self, run_id: str) -> Run:
        """The run with its params, latest metrics and tags."""
        return self.store.get_run(run_id)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value of one metric, by step."""
        return self.store.get_metric_history(run_id, key)

    def search_runs(
        self,
        experiment: str | Sequence[str] | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs of one or more experiments (all when None) matching ``filter``, evaluated in SQL.

        Example: ``filter="metrics.auc > 0.8 and params.max_depth = '6'"``,
        ``order_by=["metrics.auc DESC"]``. See :meth:`modelloop.store.Store.search_runs`.
        """
        if experiment is None:
            ids = [e.experiment_id for e in self.store.list_experiments()]
        else:
            names = [experiment] if isinstance(experiment, str) else list(experiment)
            ids = [self.store.get_experiment_by_name(n).experiment_id for n in names]
        return self.store.search_runs(
            ids, filter=filter, order_by=order_by, max_results=max_results, page_token=page_token
        )

    # -- artifacts ---------------------------------------------------------------------------

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[RunArtifact]:
        """Store a file, or every file below a directory, as artifacts of a run.

        A file lands at ``artifact_path`` (default: its own name); a directory's files land below
        ``artifact_path`` (default: the directory's name). Each blob is stored completely before
        its row is written. Symbolic links never lead out of what was named: a link given
        directly, or one inside the directory pointing outside it, is refused with
        ``InvalidInput`` naming it; a file link inside is stored with its target's content
        (rules: :mod:`modelloop.artifacts._local`).
        """
        from modelloop.artifacts._local import local_files

        files = local_files(local_path, artifact_path)  # symbolic links: see that module
        self.store.get_run(run_id)  # fail before any upload when the run is missing
        records = []
        for path, rel in files:  # every path was validated before the first upload
            blob = self.artifacts.put_file(path, follow_symlinks=False)
            records.append(RunArtifact(run_id=run_id, path=rel, digest=blob.digest, size=blob.size))
        self.store.log_run_artifacts(records)  # all rows in one transaction, after every blob
        return records

    def list_artifacts(self, run_id: str, prefix: str = "") -> list[RunArtifact]:
        """A run's artifacts at or below ``prefix``."""
        from modelloop.artifacts import validate_artifact_path

        prefix = validate_artifact_path(prefix) if prefix else ""
        return self.store.list_run_artifacts(run_id, prefix)

    def download_artifacts(
        self, run_id: str, path: str = "", dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Copy a run's artifact (or everything below ``path``) to ``dest``, verifying digests.

        Returns the local path of the file or directory. ``dest`` defaults to a new temp dir.
        """
        items = self.list_artifacts(run_id, path)
        if not items:
            raise NotFound(f"run {run_id} has no artifact at {path or '/'!r}")
        root = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="modelloop-"))
        for item in items:
            self.artifacts.get_file(item.digest, _inside(root, item.path))
        return root / path if path else root

    # -- models and datasets -----------------------------------------------------------------

    def log_model(
        self,
        run_id: str,
        model: Any,
        name: str = "model",
        *,
        input_example: pd.DataFrame | None = None,
        signature: Signature | None = None,
        metadata: Mapping[str, Any] | None = None,
        serialization: str = "skops",
        training_data: pd.DataFrame | None = None,
        categorical: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        unseen: str = "accept",
    ) -> str:
        """Save a model package as artifacts of a run; return ``runs:/<run_id>/<name>``.

        The signature is ``signature``, or inferred from ``training_data`` (the inputs the model
        was fitted on: string columns get their categories from it) or else ``input_example``;
        ``categorical`` and ``unseen`` ("accept" or "refuse") are as in
        :func:`~modelloop.models.infer_signature`.
        """
        from modelloop.artifacts import validate_artifact_path
        from modelloop.models import save_model

        name = validate_artifact_path(name)
        meta: dict[str, Any] = {"run_id": run_id}
        train = [d for d in self.store.list_run_datasets(run_id) if d.role == "train"]
        if train:
            meta["dataset_digest"] = train[-1].dataset.digest
            meta["dataset_name"] = train[-1].dataset.name
        meta.update(metadata or {})
        with tempfile.TemporaryDirectory(prefix="modelloop-model-") as tmp:
            pkg = Path(tmp) / "pkg"
            save_model(
                model,
                pkg,
                signature=signature,
                input_example=input_example,
                metadata=meta,
                serialization=serialization,  # type: ignore[arg-type]
                training_data=training_data,
                categorical=categorical,
                unseen=unseen,  # type: ignore[arg-type]
            )
            self.log_artifact(run_id, pkg, name)
        return f"runs:/{run_id}/{name}"

    def log_dataset(
        self, run_id: str, df: pd.DataFrame, name: str, *, role: str = "train", source: str = ""
    ) -> Dataset:
        """Snapshot a DataFrame (digest, schema, profile) and link it to a run."""
        from modelloop.data import dataset_digest, describe_frame
        from modelloop.models import infer_signature

        ds = self.store.create_dataset(
            name=name,
            digest=dataset_digest(df),
            source=source,
            num_rows=len(df),
            schema=infer_signature(df, categorical=()).to_dict(),  # types; the profile counts
            profile=describe_frame(df),
        )
        self.store.link_dataset(run_id, ds.dataset_id, role)
        return ds

    # -- registry ----------------------------------------------------------------------------

    def register_model(
        self,
        run: str | Run | ActiveRun,
        name: str,
        *,
        artifact_path: str = "model",
        description: str = "",
        tags: Mapping[str, str] | None = None,
        reference_data: pd.DataFrame | None = None,
    ) -> ModelVersion:
        """Register the complete model package a run logged at ``artifact_path`` as the next
        version, pinned to the package's content (a later change to the run's files makes loading
        the version fail loudly) and tagged with the run's training dataset digest.

        With ``reference_data`` (usually the training inputs) the version's reference profile
        for drift monitoring is computed once, now: inputs plus the model's own predictions. If
        that fails, no version is created.
        """
        run_id = run if isinstance(run, str) else run.run_id
        if isinstance(run, ActiveRun):
            run.flush()
        check_model_name(name)
        reserved = sorted(set(tags or {}) & system_tags())
        if reserved:
            raise InvalidInput(f"tags {reserved} are set by modelloop itself, not by callers")
        items = self.list_artifacts(run_id, artifact_path)
        self._check_package(run_id, artifact_path, items)
        version_tags = {PACKAGE_TAG: _manifest_digest(artifact_path, items)}
        train = [d for d in self.store.list_run_datasets(run_id) if d.role == "train"]
        if train:
            version_tags[DATASET_TAG] = train[-1].dataset.digest
        if reference_data is not None:  # before the version exists: all or nothing
            from modelloop.monitoring import reference_tags

            package = self._load_package(RunArtifactRef(run_id, artifact_path), False)
            version_tags.update(reference_tags(self, package, reference_data))
        version_tags.update(tags or {})
        return self.store.create_model_version(
            name,
            source=f"runs:/{run_id}/{artifact_path}",
            run_id=run_id,
            description=description,
            tags=version_tags,
            actor=self.settings.user,
        )

    def _check_package(self, run_id: str, path: str, items: Sequence[RunArtifact]) -> None:
        """A complete model package: metadata present, and its model file recorded with the
        digest the metadata names."""
        by_path = {i.path: i for i in items}
        meta_item = by_path.get(f"{path}/metadata.json")
        if meta_item is None:
            raise NotFound(f"run {run_id} has no model package at {path!r}")
        try:
            meta = json.loads(self.artifacts.read_bytes(meta_item.digest))
            model_file, model_sha = meta["model_file"], meta["model_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactCorrupted(f"run {run_id}: {path}/metadata.json is unreadable") from exc
        model_item = by_path.get(f"{path}/{model_file}")
        if model_item is None or model_item.digest != model_sha:
            raise ArtifactCorrupted(
                f"run {run_id}: the model package at {path!r} is incomplete ({model_file} "
                "missing or not the file its metadata names)"
            )

    def convert_model(self, uri: str, *, check_data: pd.DataFrame | None = None) -> OnnxConversion:
        """Convert a registered version to ONNX, check it against scikit-learn (on
        ``check_data``'s rows, else the input example) and, when they agree, attach the ONNX
        form to the version; ``modelloop serve`` then predicts it with onnxruntime alone. A
        declined model is not an error: the result says why. Needs ``modelloop[onnx]``."""
        from modelloop.registry._onnx import convert_version

        return convert_version(self, uri, check_data=check_data)

    def set_reference(self, name: str, version: int, data: pd.DataFrame) -> ModelVersion:
        """Compute and attach a version's reference profile for drift monitoring."""
        from modelloop.monitoring import set_reference

        return set_reference(self, name, version, data)

    def get_registered_model(self, name: str) -> RegisteredModel:
        """A registered model with its aliases."""
        return self.store.get_registered_model(name)

    def list_registered_models(self) -> list[RegisteredModel]:
        """Every registered model."""
        return self.store.list_registered_models()

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model."""
        return self.store.get_model_version(name, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first."""
        return self.store.list_model_versions(name)

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``name@alias`` at a version; return the version it pointed at before."""
        return self.store.set_alias(name, alias, version, actor=self.settings.user)

    def delete_alias(self, name: str, alias: str) -> int:
        """Remove an alias; return the version it pointed at."""
        return self.store.delete_alias(name, alias, actor=self.settings.user)

    def resolve(self, uri: str | ModelRef) -> ModelVersion:
        """The version a ``models:/`` URI names (alias, number, or latest)."""
        ref = parse_model_uri(uri) if isinstance(uri, str) else uri
        if not isinstance(ref, ModelRef):
            raise InvalidInput(f"{uri!s} names a run artifact, not a registered model version")
        if ref.alias:
            return self.store.get_version_by_alias(ref.name, ref.alias)
        if ref.version is not None:
            return self.store.get_model_version(ref.name, ref.version)
        latest = self.store.get_registered_model(ref.name).latest_version
        if not latest:
            raise NotFound(f"model {ref.name!r} has no versions")
        return self.store.get_model_version(ref.name, latest)

    def fetch_model(self, uri: str | ModelVersion) -> Path:
        """The local folder of the package ``uri`` names (or of a version already resolved),
        every file's digest verified, without loading the model (for readers of its signature
        or of an exported form, and for loaders that read the folder once)."""
        ref, pinned = self._package_ref(uri)
        return self._package_dir(ref, pinned)

    def _package_ref(self, uri: str | ModelVersion) -> tuple[RunArtifactRef, str | None]:
        if isinstance(uri, ModelVersion):
            mv = uri
        else:
            ref = parse_model_uri(uri)
            if not isinstance(ref, ModelRef):
                return ref, None
            mv = self.resolve(ref)
        src = parse_model_uri(mv.source)
        if not isinstance(src, RunArtifactRef):
            raise InvalidInput(f"version {mv.name}/{mv.version} has an unknown source")
        pinned = mv.tags.get(PACKAGE_TAG)
        if pinned is None:
            raise ArtifactCorrupted(f"version {mv.name}/{mv.version} has no package digest")
        return src, pinned

    def load_model(self, uri: str, *, allow_pickle: bool = False) -> ModelPackage:
        """Load a model package from ``models:/...`` or ``runs:/...``, verifying every digest.

        A registered version loads only the exact package it was registered with. Types in the
        file are checked against this client's trusted-type list (settings), never against what
        the file declares; pickle needs ``allow_pickle=True``.
        """
        ref, pinned = self._package_ref(uri)
        return self._load_package(ref, allow_pickle, pinned=pinned)

    def _load_package(
        self, ref: RunArtifactRef, allow_pickle: bool, *, pinned: str | None = None
    ) -> ModelPackage:
        from modelloop.models import load_model

        local = self._package_dir(ref, pinned)
        return load_model(local, allow_pickle=allow_pickle, settings=self.settings)

    def _package_dir(self, ref: RunArtifactRef, pinned: str | None) -> Path:
        items = self.list_artifacts(ref.run_id, ref.path)
        if not items:
            raise NotFound(f"run {ref.run_id} has no artifacts at {ref.path!r}")
        key = _manifest_digest(ref.path, items)
        if pinned is not None and key != pinned:
            raise ArtifactCorrupted(
                f"the files of runs:/{ref.run_id}/{ref.path} changed after registration "
                f"(package digest {key}, registered {pinned})"
            )
        return self._fetch_package(ref.path, items, key)

    def _fetch_package(self, prefix: str, items: Sequence[RunArtifact], key: str) -> Path:
        """Materialise a package in the content-addressed cache under the home directory.

        Safe when many threads or processes load the same model at once: a complete folder is
        only ever renamed into place, never modified or removed while valid.
        """
        cache = self.settings.home / "cache" / "models" / key
        if cache.is_dir() and _matches(cache, prefix, items):
            return cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f".{key}.{uuid.uuid4().hex}"
        try:
            for i in items:
                self.artifacts.get_file(i.digest, _inside(tmp, _relative(prefix, i.path)))
            if cache.exists() and not _matches(cache, prefix, items):
                # altered by hand: move it aside atomically, never delete under a reader
                with contextlib.suppress(OSError):
                    os.replace(cache, cache.parent / f".{key}.stale.{uuid.uuid4().hex}")
            try:
                os.replace(tmp, cache)
            except OSError:
                if not (cache.is_dir() and _matches(cache, prefix, items)):
                    raise StoreError(f"cannot place the model package in {cache}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cache


def _server_stores(
    settings: Settings, store: Store | None, artifacts: ArtifactStore | None
) -> tuple[Store, ArtifactStore]:
    """The store and artifact store of a modelloop server, sharing one connection pool."""
    from typing import cast

    from modelloop.store._http import HttpArtifactStore, HttpStore, Transport

    url = settings.resolved_store_url
    if settings.artifact_root and artifacts is None:
        import logging

        logging.getLogger("modelloop").warning(
            "MODELLOOP_ARTIFACT_ROOT is ignored: with a modelloop server as the store, "
            "artifacts are stored by the server"
        )
    transport = Transport(url, token=settings.token, ca_bundle=settings.ca_bundle)
    # HttpArtifactStore has the public methods of ArtifactStore that the client calls.
    return (
        store or HttpStore(url, transport=transport),
        artifacts or cast("ArtifactStore", HttpArtifactStore(transport)),
    )


def _relative(prefix: str, path: str) -> str:
    return path[len(prefix) :].lstrip("/") or Path(path).name


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` after checking it stays inside ``root`` (paths come from the store)."""
    from modelloop.artifacts import validate_artifact_path

    target = root / validate_artifact_path(relative)
    if not target.resolve().is_relative_to(root.resolve()):
        raise ArtifactCorrupted(f"artifact path {relative!r} leaves {root}")
    return target


def _manifest_digest(prefix: str, items: Sequence[RunArtifact]) -> str:
    """sha256 over the (relative path, digest) pairs of a package: its content identity."""
    lines = sorted(f"{_relative(prefix, i.path)}\0{i.digest}\n" for i in items)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _matches(cache: Path, prefix: str, items: Sequence[RunArtifact]) -> bool:
    """Whether a cached package holds exactly the recorded bytes (and nothing is missing)."""
    for i in items:
        p = cache / _relative(prefix, i.path)
        try:
            with open(p, "rb") as fh:
                if hashlib.file_digest(fh, "sha256").hexdigest() != i.digest:
                    return False
        except OSError:
            return False
    return True


_clients: dict[tuple[str, str], Client] = {}
_clients_lock = threading.Lock()


def system_tags() -> frozenset[str]:
    """Version tags that say what a version is and serves: never taken from callers at
    registration (imported from their owners lazily, as the monitoring package is heavy)."""
    from modelloop.monitoring._reference import REFERENCE_TAG, TASK_TAG
    from modelloop.registry._onnx import ONNX_TAG

    return frozenset((PACKAGE_TAG, DATASET_TAG, ONNX_TAG, REFERENCE_TAG, TASK_TAG))


def default_client(settings: Settings | None = None) -> Client:
    """A client for ``settings`` (default: the current environment's), shared per (store URL,
    artifact root)."""
    if settings is None:
        settings = Settings.from_env()
    key = (settings.resolved_store_url, settings.resolved_artifact_root)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.settings != settings:
            if client is not None:
                client.close()
            client = _clients[key] = Client(settings)
        return client
