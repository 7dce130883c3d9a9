"""Loaded models and the routing between a champion and an optional challenger.

An :class:`Endpoint` is one served model name: the champion answers, and a challenger may take a
share of the traffic (**canary**; sticky per request key when one is given) or get a copy of
every request whose answer is logged and never returned (**shadow**). A :class:`ModelManager`
loads versions from the registry, follows the aliases they were named by, and swaps a new version
in only once it is loaded and warmed up, so no request is dropped while an alias moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelloop._names import PREDICTION_COLUMNS
from modelloop._text import brief
from modelloop.exceptions import InvalidInput, ModelloopError, NotFound
from modelloop.models._onnx import final_step, labels_from_proba
from modelloop.models._package import INPUT_EXAMPLE_FILE
from modelloop.registry._onnx import ONNX_TAG
from modelloop.registry._uri import ModelRef, parse_model_spec
from modelloop.serving._batcher import Batcher
from modelloop.serving._codec import decode_records, float_matrix, to_frame
from modelloop.serving._errors import ModelRejectedInput, Overloaded, PredictionFailed

if TYPE_CHECKING:
    from modelloop._client import Client
    from modelloop.models import ModelPackage, Signature
    from modelloop.models._trees import TreeForm
    from modelloop.serving._app import ServeConfig
    from modelloop.serving._direct import DirectInput
    from modelloop.serving._metrics import ServingMetrics
    from modelloop.store import ModelVersion

__all__ = ["Endpoint", "LoadedModel", "ModelManager", "Predictor", "RouteMode"]

log = logging.getLogger("modelloop.serving")

RouteMode = Literal["off", "canary", "shadow"]
_MODES = ("off", "canary", "shadow")


_LOG_COLUMNS = frozenset((*PREDICTION_COLUMNS, "prediction", "latency_ms"))


def _reserved(column: str) -> bool:
    """Whether an input column would collide with a prediction-log column."""
    return column in _LOG_COLUMNS or column.startswith("proba_")


def _one_openmp_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit OpenMP to one thread on the calling thread (until the returned context exits, if
    used as one). OpenMP keeps the setting per thread, so other threads keep their own."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on it; without it, nothing to limit
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="openmp")


class Predictor:
    """Predicts a merged batch of validated columns with one model package (or its ONNX twin,
    or its tree form)."""

    def __init__(
        self,
        package: ModelPackage | None,
        onnx: Any = None,
        *,
        signature: Signature | None = None,
        path: Path | None = None,
        trees: TreeForm | None = None,
    ) -> None:
        """From a loaded ``package`` (scikit-learn, or ``onnx`` when given), or from ``onnx``
        or ``trees`` alone with the package's ``signature`` and ``path``: then scikit-learn is
        never loaded.
        """
        if package is not None:
            signature, path = package.signature, package.path
        if path is None or (package is None and onnx is None and trees is None):
            raise InvalidInput(
                "a predictor needs a loaded package, or an ONNX model or tree form and a path"
            )
        if signature is None:
            raise InvalidInput(
                f"the model at {path} has no signature; log it with an input example "
                "so the server can validate requests"
            )
        self.package = package
        self.path = path
        self.signature: Signature = signature
        self.onnx = onnx
        self.trees = trees
        #: the version's ONNX-form tag when it was loaded (a change makes the server reload it)
        self.onnx_tag = ""
        self.classes = list(signature.classes) if signature.classes is not None else None
        self._from_proba = False
        self._model_classes = None
        #: the pipeline's first step filled from decoded columns, once checked (check_direct)
        self._direct: DirectInput | None = None
        if package is None:
            form: Any = onnx if onnx is not None else trees
            self.has_proba = bool(form.has_proba) and signature.task != "regression"
            return
        model = package.model
        self.has_proba = signature.task != "regression" and hasattr(model, "predict_proba")
        self._from_proba = self.has_proba and labels_from_proba(model)
        if self._from_proba:
            self._model_classes = np.asarray(final_step(model).classes_)

    def prepare_thread(self, lane: str) -> None:
        """Set up a batcher lane's thread before its first prediction: the small lane's
        scikit-learn calls use one OpenMP thread. For a few rows, waking a thread pool costs more
        than it saves, and on a busy machine its spinning threads take cores from the server;
        rows are predicted independently, so the results are the same."""
        if lane == "small" and self.package is not None:
            _one_openmp_thread()  # for this thread only (OpenMP's own rule)

    def __call__(self, columns: dict[str, list[Any]], n_rows: int) -> tuple[Any, Any]:
        try:
            return self._predict(columns)
        except ModelloopError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ModelRejectedInput(
                f"the model could not predict this input: {brief(e, 300, with_type=False)}"
            ) from e
        except Exception as e:
            raise PredictionFailed(f"the model failed: {brief(e, 300)}") from e

    @property
    def runtime(self) -> str:
        """What predicts: ``onnx``, ``trees`` (the tree form, with NumPy) or ``sklearn``."""
        if self.onnx is not None:
            return "onnx"
        return "trees" if self.trees is not None else "sklearn"

    def _predict(self, columns: dict[str, list[Any]]) -> tuple[Any, Any]:
        if self.trees is not None:
            labels, proba = self.trees.predict(columns)
            return labels, proba if self.has_proba else None
        if self.onnx is not None:
            if self.onnx.input_mode == "tensor":  # numeric inputs: no pandas on this path
                return self.onnx.predict_both(float_matrix(columns, self.signature))
            return self.onnx.predict_both(to_frame(columns, self.signature))
        assert self.package is not None
        if self._direct is not None:
            matrix = self._direct.matrix(columns)
            if matrix is not None:
                return self._outputs(self._direct.rest, matrix)
        return self._outputs(self.package.model, to_frame(columns, self.signature))

    def _outputs(self, model: Any, X: Any) -> tuple[Any, Any]:
        if not self.has_proba:
            return np.asarray(model.predict(X)), None
        proba = np.asarray(model.predict_proba(X))
        if self._from_proba:
            assert self._model_classes is not None
            return self._model_classes[np.argmax(proba, axis=1)], proba
        return np.asarray(model.predict(X)), proba

    def check_direct(self, columns: dict[str, list[Any]]) -> bool:
        """Turn on the direct input (see ``_direct``) for a scikit-learn pipeline of its shape,
        if it agrees bit for bit with the whole pipeline on these decoded rows, and on them
        again with an unseen value in every text column; whether it is on."""
        if self.package is None:
            return False
        from modelloop.serving._direct import DirectInput

        model = self.package.model
        direct = DirectInput.plan(model, self.signature)
        if direct is None:
            return False
        unseen = dict(columns)
        for spec in self.signature.inputs:
            if spec.dtype == "string":
                unseen[spec.name] = ["\x00unseen"] * len(columns[spec.name])
        for rows in (columns, unseen):
            try:
                same = direct.agrees(model, to_frame(rows, self.signature), rows)
            except Exception:  # the pipeline fails where the direct input does not
                same = False
            if not same:
                log.warning(
                    "%s: the pipeline's input is built through pandas (a faster way did not "
                    "give the same matrix or predictions)",
                    self.path,
                )
                return False
        self._direct = direct
        return True


@dataclass(eq=False)
class LoadedModel:
    """One version in memory, with its batcher."""

    name: str
    version: int
    predictor: Predictor
    batcher: Batcher
    loaded_at: float = field(default_factory=time.time)
    log_names: tuple[str, ...] | None = None  # prediction-log columns of a single row

    @property
    def signature(self) -> Signature:
        return self.predictor.signature

    @property
    def classes(self) -> list[Any] | None:
        return self.predictor.classes

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "runtime": self.predictor.runtime,
            "onnx": self.predictor.onnx is not None,
            "onnx_sha256": None if self.predictor.onnx is None else self.predictor.onnx.sha256,
            "loaded_at": self.loaded_at,
        }


@dataclass(eq=False)
class Endpoint:
    """A served model name: its champion, and a challenger in canary or shadow mode."""

    name: str
    champion_ref: ModelRef
    champion: LoadedModel
    challenger_ref: ModelRef | None = None
    challenger: LoadedModel | None = None
    mode: RouteMode = "off"
    share: float = 0.0
    #: per role, the version its alias names but that could not be loaded (the previous one
    #: still answers): {"version", "reason", "since"}
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)

    def pick(self, key: str | None) -> tuple[LoadedModel, str, LoadedModel | None]:
        """The model that answers, its route name, and the shadow model that gets a copy."""
        challenger = self.challenger
        if challenger is None or self.mode == "off":
            return self.champion, "champion", None
        if self.mode == "shadow":
            return self.champion, "champion", challenger
        if key is not None:
            digest = hashlib.blake2b(f"{self.name}\0{key}".encode(), digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2**64
        else:
            u = random.random()
        if u < self.share:
            return challenger, "canary", None
        return self.champion, "champion", None

    def by_version(self, version: int) -> tuple[LoadedModel, str]:
        """The loaded model of an exact version, for ``/versions/{v}`` requests."""
        if self.champion.version == version:
            return self.champion, "champion"
        if self.challenger is not None and self.challenger.version == version:
            return self.challenger, "canary" if self.mode == "canary" else "shadow"
        raise NotFound(
            f"model {self.name!r} version {version} is not loaded (loaded: {self.versions()})"
        )

    def versions(self) -> list[int]:
        out = [self.champion.version]
        if self.challenger is not None and self.challenger.version not in out:
            out.append(self.challenger.version)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "champion": {
                "ref": str(self.champion_ref),
                **self.champion.describe(),
                "refused": self.refused.get("champion"),
            },
            "challenger": None
            if self.challenger is None
            else {
                "ref": str(self.challenger_ref),
                **self.challenger.describe(),
                "refused": self.refused.get("challenger"),
            },
            "mode": self.mode,
            "share": self.share,
        }


class ModelManager:
    """Loads registry versions, serves them as endpoints, and follows alias moves."""

    def __init__(
        self,
        client: Client,
        config: ServeConfig,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics
        self.endpoints: dict[str, Endpoint] = {}
        self.loading: set[str] = set()  # names given to serve, not loaded yet
        self.failed: str | None = None  # why loading failed, once it has
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        #: (name, version, ONNX-form tag) that failed to load when followed, and why: not retried
        self._unloadable: dict[tuple[str, int, str], dict[str, Any]] = {}

    # -- lookup ------------------------------------------------------------------------------

    def get(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            if self.failed is not None:
                raise PredictionFailed(f"the server could not start: {self.failed}") from None
            if name in self.loading:
                raise Overloaded(f"model {name!r} is still loading; retry", retry_after=1) from None
            raise NotFound(
                f"model {name!r} is not served here (served: {sorted(self.endpoints)})"
            ) from None

    # -- loading -----------------------------------------------------------------------------

    def _load_sync(self, ref: ModelRef) -> tuple[int, Predictor]:
        from modelloop.models._package import load_model, read_signature

        mv = self.client.resolve(ref)
        uri = f"models:/{mv.name}/{mv.version}"
        folder = self.client.fetch_model(mv)  # fetched and verified once for every runtime
        signature = read_signature(folder)
        predictor = None
        if signature is not None and self.config.onnx is not False and mv.tags.get(ONNX_TAG):
            predictor = self._registered_onnx(uri, mv, folder, signature)
        if predictor is None and signature is not None and self.config.tree_form:
            predictor = self._tree_form(uri, folder, signature)
        detached = ONNX_TAG in mv.tags and not mv.tags[ONNX_TAG]
        if predictor is None and self.config.onnx and detached:
            log.warning(
                "%s: its ONNX form was detached after a failed check; not converting it "
                "again here: scikit-learn",
                uri,
            )
        elif predictor is None and self.config.onnx and signature is not None:
            predictor = self._onnx_predictor(uri, folder, signature)
        if predictor is None:
            predictor = Predictor(load_model(folder, settings=self.client.settings))
        if self.config.log_predictions:
            clash = [c for c in predictor.signature.columns if _reserved(c)]
            if clash:
                raise InvalidInput(
                    f"{mv.name}/{mv.version}: input columns {clash} have the names of the "
                    "prediction log's own columns; serve it with --no-log, or rename them"
                )
        self._warm_up(predictor)
        predictor.onnx_tag = self._form_tag(mv)
        return mv.version, predictor

    def _form_tag(self, mv: ModelVersion) -> str:
        """The version's ONNX-form tag as this server uses it ("" when it ignores forms)."""
        return mv.tags.get(ONNX_TAG, "") if self.config.onnx is not False else ""

    def _registered_onnx(
        self, uri: str, mv: ModelVersion, folder: Path, signature: Signature
    ) -> Predictor | None:
        """The version's registered ONNX form (see ``modelloop models convert``), checked when it
        was attached; scikit-learn is not loaded. None (and a warning) when it cannot be used."""
        from modelloop.registry._onnx import load_registered_onnx

        try:
            onnx = load_registered_onnx(self.client, mv, signature)
        except ImportError:
            log.warning(
                "%s has an ONNX form but onnxruntime is not installed: %s",
                uri,
                "pip install 'modelloop[onnx]'",
            )
            return None
        except Exception as e:  # a damaged or foreign form: fall back, loudly
            log.warning("%s: registered ONNX form not used: %s", uri, e)
            return None
        if onnx is None:
            return None
        log.info(
            "%s: onnxruntime path on (registered ONNX form, model sha256 %s)",
            uri,
            onnx.sha256,
        )
        return Predictor(None, onnx, signature=signature, path=folder)

    @staticmethod
    def _tree_form(uri: str, folder: Path, signature: Signature) -> Predictor | None:
        """The package's tree form (see ``modelloop.models._trees``), checked against
        scikit-learn when it was saved; scikit-learn is not loaded. None when the package has
        none, and (with a warning) when its files are damaged or do not fit the signature."""
        from modelloop.models._trees import TreeForm

        try:
            trees = TreeForm.load(folder)
            if trees is not None:
                trees.check_signature(signature)
        except Exception as e:  # a damaged form: the model itself still predicts, loudly
            log.warning("%s: tree form not used: %s", uri, e)
            return None
        if trees is None:
            return None
        log.info(
            "%s: predicted by its tree form with NumPy (%d trees, checked on %d rows when saved)",
            uri,
            trees.n_trees,
            trees.check_rows,
        )
        return Predictor(None, signature=signature, path=folder, trees=trees)

    def _onnx_predictor(self, uri: str, folder: Path, signature: Signature) -> Predictor | None:
        """The ONNX twin of a version, converted and checked once in a child process and kept
        beside the package cache; scikit-learn is not loaded here. None (and a warning) when
        the model does not convert or does not match scikit-learn on its input example."""
        from modelloop.models._onnx import convert_in_subprocess, load_checked

        settings = self.client.settings
        converted = settings.home / "cache" / "onnx" / f"{folder.name}.onnx"
        reason, _ = convert_in_subprocess(folder, converted, trusted_types=settings.trusted_types)
        if reason:
            log.warning("%s: onnxruntime path off: %s", uri, reason)
            return None
        try:
            onnx = load_checked(converted, signature)
        except Exception as e:
            log.warning("%s: onnxruntime path off: %s", uri, e)
            return None
        log.info("%s: onnxruntime path on", uri)
        return Predictor(None, onnx, signature=signature, path=folder)

    @staticmethod
    def _warm_up(predictor: Predictor) -> None:
        """One prediction on the package's input example, so the first request is not slow."""
        example = predictor.path / INPUT_EXAMPLE_FILE
        if not example.is_file():
            return
        import json

        try:
            records = json.loads(example.read_text())[:8]
            decoded = decode_records({"records": records}, predictor.signature, max_rows=8)
            # a few rows, like the small lane: a thread pool would only slow them down
            with (
                _one_openmp_thread() if predictor.package is not None else contextlib.nullcontext()
            ):
                predictor.check_direct(decoded.columns)
                predictor(decoded.columns, decoded.n_rows)
        except Exception as e:  # a warm-up failure is not a load failure
            log.warning("warm-up prediction failed for %s: %s", predictor.path, e)

    def _make(self, name: str, version: int, predictor: Predictor) -> LoadedModel:
        cfg = self.config
        metrics = self.metrics
        on_batch: Callable[[int], None] | None = None
        on_depth: Callable[[int], None] | None = None
        if metrics is not None:
            v = str(version)

            def on_batch(size: int) -> None:
                metrics.batch(name, v, size)

            def on_depth(depth: int) -> None:
                endpoint = self.endpoints.get(name)
                total = depth
                if endpoint is not None:
                    total = sum(
                        m.batcher.depth
                        for m in (endpoint.champion, endpoint.challenger)
                        if m is not None
                    )
                metrics.queue_depth(name, total)

        batcher = Batcher(
            predictor,
            columns=predictor.signature.columns,
            max_batch_rows=cfg.max_batch_rows,
            max_delay_s=cfg.max_batch_delay_ms / 1000.0,
            max_queue_rows=cfg.max_queue_rows,
            # large requests wait in a lane of their own: room for a few of the largest at once
            max_bulk_rows=max(cfg.max_queue_rows, 4 * cfg.max_rows),
            batching=cfg.batching,
            on_batch=on_batch,
            on_depth=on_depth,
            on_thread_start=predictor.prepare_thread,
            name=f"{name}-{version}",
        )
        batcher.start()
        return LoadedModel(name, version, predictor, batcher)

    async def load(self, ref: ModelRef) -> LoadedModel:
        version, predictor = await asyncio.to_thread(self._load_sync, ref)
        return self._make(ref.name, version, predictor)

    async def add(self, spec: str) -> Endpoint:
        """Serve ``spec`` (``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``) as its champion."""
        ref = parse_model_spec(spec)
        if ref.name in self.endpoints:
            raise InvalidInput(f"model {ref.name!r} is given twice")
        champion = await self.load(ref)
        endpoint = Endpoint(ref.name, ref, champion)
        self.endpoints[ref.name] = endpoint
        self.loading.discard(ref.name)
        self._report(endpoint)
        return endpoint

    # -- routing -----------------------------------------------------------------------------

    async def set_routing(
        self,
        name: str,
        *,
        challenger: str | None,
        mode: str,
        share: float = 0.0,
    ) -> Endpoint:
        """Set (or clear, with ``challenger=None`` / ``mode="off"``) a model's challenger."""
        endpoint = self.get(name)
        if mode not in _MODES:
            raise InvalidInput(f"mode must be one of {list(_MODES)}, got {mode!r}")
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
            raise InvalidInput(f"share must be a number between 0 and 1, got {share!r}")
        if mode == "canary" and challenger is None and endpoint.challenger is None:
            raise InvalidInput("canary mode needs a challenger")
        if mode == "shadow" and challenger is None and endpoint.challenger is None:
            raise InvalidInput("shadow mode needs a challenger")
        # Load before taking the lock: switching a canary off never waits behind a load.
        loaded, ref = None, None
        if challenger is not None:
            ref = _challenger_ref(name, challenger)
            loaded = await self.load(ref)
        async with self._lock:
            if loaded is not None:
                old = endpoint.challenger
                endpoint.challenger_ref, endpoint.challenger = ref, loaded
                self._retire(old)
                self._clear_refused(endpoint, "challenger")
            elif mode == "off":
                old = endpoint.challenger
                endpoint.challenger_ref, endpoint.challenger = None, None
                self._retire(old)
                self._clear_refused(endpoint, "challenger")
                if old is not None and self.metrics is not None:
                    self.metrics.model_unloaded(name, "challenger")
            endpoint.mode = mode  # type: ignore[assignment]
            endpoint.share = float(share) if mode == "canary" else 0.0
        self._report(endpoint)
        return endpoint

    # -- following the registry --------------------------------------------------------------

    async def refresh(self) -> list[str]:
        """Load and switch to the versions aliases now point at; return what changed.

        Versions load outside the routing lock; each switch happens under it, and only if the
        routing still names the same reference and version it did when the load began.
        """
        changed: list[str] = []
        for endpoint in list(self.endpoints.values()):
            for role in ("champion", "challenger"):
                ref: ModelRef | None = getattr(endpoint, f"{role}_ref")
                current: LoadedModel | None = getattr(endpoint, role)
                if ref is None or current is None:
                    continue
                loaded = await self._follow(endpoint, role, ref, current)
                if loaded is None:
                    continue
                async with self._lock:
                    if (
                        getattr(endpoint, f"{role}_ref") is not ref
                        or getattr(endpoint, role) is not current
                    ):
                        self._retire(loaded)  # routing changed meanwhile: drop what we loaded
                        continue
                    setattr(endpoint, role, loaded)
                    self._retire(current)
                changed.append(f"{endpoint.name} {role} {current.version} -> {loaded.version}")
                log.info(
                    "%s: %s now version %s (was %s)%s",
                    endpoint.name,
                    role,
                    loaded.version,
                    current.version,
                    " with its ONNX form changed" if loaded.version == current.version else "",
                )
            self._report(endpoint)
        return changed

    async def _follow(
        self, endpoint: Endpoint, role: str, ref: ModelRef, current: LoadedModel
    ) -> LoadedModel | None:
        """The version ``ref`` now names, loaded, if it differs from ``current`` (or is the same
        version with an ONNX form attached or removed since); else None. A version that fails
        to load is recorded as refused for ``role`` until the alias names a loadable one."""
        try:
            mv = await asyncio.to_thread(self.client.resolve, ref)
        except Exception as e:  # keep serving what is loaded
            log.warning("cannot resolve %s: %s; keeping version %s", ref, e, current.version)
            return None
        wanted = (ref.name, mv.version, self._form_tag(mv))
        if wanted[1:] == (current.version, current.predictor.onnx_tag):
            self._clear_refused(endpoint, role)  # the alias came back
            return None
        refused = self._unloadable.get(wanted)
        if refused is not None:  # said once already; retried when either changes
            self._set_refused(endpoint, role, refused)
            return None
        try:
            loaded = await self.load(ModelRef(ref.name, version=mv.version))
        except Exception as e:
            refused = {
                "version": mv.version,
                "reason": brief(e, 300, with_type=False),
                "since": time.time(),
            }
            self._unloadable[wanted] = refused
            self._set_refused(endpoint, role, refused)
            log.error(
                "cannot load %s version %s%s: %s; keeping version %s%s (not retried until the "
                "version or its ONNX form changes)",
                ref.name,
                mv.version,
                " with its ONNX form changed" if mv.version == current.version else "",
                e,
                current.version,
                " as loaded" if mv.version == current.version else "",
            )
            return None
        self._clear_refused(endpoint, role)
        return loaded

    def _set_refused(self, endpoint: Endpoint, role: str, refused: dict[str, Any]) -> None:
        endpoint.refused[role] = refused
        if self.metrics is not None:
            self.metrics.model_refused(endpoint.name, role, str(refused["version"]))

    def _clear_refused(self, endpoint: Endpoint, role: str) -> None:
        if endpoint.refused.pop(role, None) is not None and self.metrics is not None:
            self.metrics.model_refused(endpoint.name, role, None)

    async def watch(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive a bad poll
                log.exception("alias refresh failed")

    def _retire(self, old: LoadedModel | None) -> None:
        """Close a replaced model once the requests already queued on it are answered."""
        if old is None or any(
            old is e.champion or old is e.challenger for e in self.endpoints.values()
        ):
            return
        # an unloaded version answers what it has queued: give it time whatever --grace says
        task = asyncio.get_running_loop().create_task(
            old.batcher.close(max(self.config.grace_s, 60.0))
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _report(self, endpoint: Endpoint) -> None:
        if self.metrics is None:
            return
        self.metrics.model_loaded(endpoint.name, "champion", str(endpoint.champion.version))
        if endpoint.challenger is not None:
            self.metrics.model_loaded(endpoint.name, "challenger", str(endpoint.challenger.version))

    async def close(self, timeout_s: float) -> None:
        """Answer what is queued (within ``timeout_s``) and stop every batcher."""
        models = {
            id(m): m
            for e in self.endpoints.values()
            for m in (e.champion, e.challenger)
            if m is not None
        }
        await asyncio.gather(*(m.batcher.close(timeout_s) for m in models.values()))
        for task in list(self._retiring):
            with contextlib.suppress(Exception):
                await task


def _challenger_ref(name: str, spec: str | int) -> ModelRef:
    """A challenger spec: ``@alias``, a version number, or a full ``NAME@ALIAS`` / ``NAME/V``."""
    if isinstance(spec, bool):
        raise InvalidInput(f"challenger must be an alias or a version, got {spec!r}")
    if isinstance(spec, int):
        if not 1 <= spec < 2**63:
            raise InvalidInput(f"challenger version must be between 1 and 2**63-1, got {spec}")
        return ModelRef(name, version=spec)
    if not isinstance(spec, str) or not spec:
        raise InvalidInput(f"challenger must be an alias or a version, got {spec!r}")
    if spec.startswith("@"):
        spec = name + spec
    elif spec.isascii() and spec.isdigit():
        return _challenger_ref(name, int(spec) if len(spec) <= 19 else 2**63)
    ref = parse_model_spec(spec)
    if ref.name != name:
        raise InvalidInput(
            f"the challenger of {name!r} must be a version of {name!r}, got {ref.name!r}"
        )
    return ref
