"""Hyper-parameter tuning with Optuna, the study kept in the metadata store's own database.

Optuna's tables (``studies``, ``trials``, ``version_info``, ... and its ``alembic_version``) sit
beside modelloop's (whose Alembic table is ``modelloop_alembic_version``), so every process that
reaches the store — local worker processes or other machines on the same PostgreSQL — can work
on one study. Each call of :func:`run_study` joins the study named ``study_name`` (creating it if
needed) and runs trials until the study as a whole has used its budget.

With a modelloop server as the store (``MODELLOOP_STORE_URL=https://...``) the client has no
database to put a study in, and the server offers none: the study then lives in an Optuna journal
file in the client's home (``<home>/tune/<server>.journal``, one per server, shared by the local
worker processes under a file lock), while every trial is still a child run logged through the
server. Resuming a study (``tune.study``) then works from the machine that holds that journal.

Budget: a worker takes a study-wide lock (a PostgreSQL advisory lock; a lock file beside a
SQLite database or a journal file), counts the study's trials in every state and only then asks
for a new one, so ``n_trials`` is exact however many workers share the study. ``timeout_s`` stops
each worker from starting a trial once that many seconds have passed since it started its first
one (after loading data and joining the study).

With ``executor="ray"`` the workers are Ray tasks on a cluster (:mod:`modelloop.pipeline._ray`)
running the same worker code on the same study with the same per-worker sampler seeds, so one
worker gives the same trials on either executor.

What one trial does (pruning, scoring, its child run) is in :mod:`modelloop.pipeline._trials`.
Worker processes receive a JSON job file only (paths, params, settings), never pickled objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop import exceptions as _exc
from modelloop.exceptions import Conflict, InvalidInput, ModelloopError
from modelloop.pipeline._trials import (
    RUN_ID_ATTR,
    load_xy,
    make_model,
    run_trial,
)

if TYPE_CHECKING:
    import optuna

    from modelloop._client import Client
    from modelloop._config import Settings

__all__ = [
    "EXECUTORS",
    "METRICS",
    "TuneConfig",
    "TuneResult",
    "run_study",
    "study_storage_url",
]

#: metric -> (task, direction in which it improves)
METRICS: dict[str, tuple[str, str]] = {
    "auc": ("classification", "maximize"),
    "accuracy": ("classification", "maximize"),
    "f1": ("classification", "maximize"),
    "log_loss": ("classification", "minimize"),
    "rmse": ("regression", "minimize"),
    "mae": ("regression", "minimize"),
    "r2": ("regression", "maximize"),
}
_TASKS = ("classification", "regression")
#: where tuning workers run: local processes, or Ray tasks on a cluster
EXECUTORS = ("local", "ray")
_PARAM_TYPES = ("int", "float", "categorical")
_CONFIG_ATTR = "modelloop_config"


@dataclass(frozen=True)
class TuneConfig:
    """What to tune and for how long.

    ``space`` maps a model parameter to ``{"type": "int"|"float"|"categorical", "low", "high",
    "log", "step", "choices"}``. At least one of ``n_trials`` (total over every worker of the
    study) and ``timeout_s`` (per worker, from its first trial) is required. ``cv_folds`` > 0 scores
    each trial by k-fold cross-validation on the training data instead of the validation file.
    """

    metric: str
    direction: str
    space: Mapping[str, Mapping[str, Any]]
    n_trials: int | None = None
    timeout_s: float | None = None
    pruning: bool = True
    seed: int = 0
    cv_folds: int = 0
    #: the training rows are in time order: ``cv_folds`` are forward-chaining time folds
    #: (each validation fold later than its training rows), never shuffled
    time_ordered: bool = False
    #: intermediate scores per trial (stages of a warm-started ensemble)
    report_steps: int = 10
    #: upper bound on the epochs of a ``partial_fit`` estimator (its ``max_iter`` if lower)
    max_epochs: int = 50
    #: trials finished before the median pruner starts pruning
    pruning_startup_trials: int = 4
    #: reported steps of a trial before it may be pruned
    pruning_warmup_steps: int = 1

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidInput(
                f"tune metric {self.metric!r} is unknown; use one of {list(METRICS)}"
            )
        natural = METRICS[self.metric][1]
        if self.direction not in ("maximize", "minimize"):
            raise InvalidInput(
                f"tune direction {self.direction!r} must be 'maximize' or 'minimize'"
            )
        if self.direction != natural:
            raise InvalidInput(
                f"tune metric {self.metric!r} improves when it goes "
                f"{'up' if natural == 'maximize' else 'down'}: direction must be {natural!r}, "
                f"not {self.direction!r}"
            )
        if not self.space:
            raise InvalidInput("tune space is empty: name at least one parameter to search")
        for name, dist in self.space.items():
            _check_distribution(name, dist)
        if self.n_trials is None and self.timeout_s is None:
            raise InvalidInput("tune needs a budget: n_trials, timeout_s or both")
        if self.n_trials is not None and self.n_trials < 1:
            raise InvalidInput(f"tune n_trials must be >= 1, got {self.n_trials}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InvalidInput(f"tune timeout_s must be > 0, got {self.timeout_s}")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise InvalidInput(f"tune cv_folds must be 0 or >= 2, got {self.cv_folds}")
        for key in ("report_steps", "max_epochs"):
            if getattr(self, key) < 1:
                raise InvalidInput(f"tune {key} must be >= 1, got {getattr(self, key)}")
        object.__setattr__(self, "space", {k: dict(v) for k, v in self.space.items()})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, the inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneConfig:
        """Rebuild a config from :meth:`to_dict` output."""
        return cls(**d)


def _check_distribution(name: str, dist: Mapping[str, Any]) -> None:
    where = f"tune space[{name!r}]"
    kind = dist.get("type")
    if kind not in _PARAM_TYPES:
        raise InvalidInput(f"{where}: type {kind!r} must be one of {list(_PARAM_TYPES)}")
    unknown = set(dist) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}")
    if kind == "categorical":
        if not dist.get("choices"):
            raise InvalidInput(f"{where}: a categorical parameter needs non-empty 'choices'")
        return
    low, high = dist.get("low"), dist.get("high")
    if low is None or high is None:
        raise InvalidInput(f"{where}: an {kind} parameter needs 'low' and 'high'")
    if low > high:
        raise InvalidInput(f"{where}: low {low} is above high {high}")
    if dist.get("log") and low <= 0:
        raise InvalidInput(f"{where}: a log-scaled parameter needs low > 0, got {low}")
    if dist.get("log") and dist.get("step") not in (None, 1):
        raise InvalidInput(f"{where}: 'step' cannot be combined with 'log'")


@dataclass(frozen=True)
class TuneResult:
    """The study after a :func:`run_study` call, over every worker that took part.

    ``best_params`` holds the tuned parameters only (apply them over the base params).
    ``trials`` has one dict per trial: number, state, value, params, run_id (its child run),
    worker, duration_s and error.
    """

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    n_complete: int
    n_pruned: int
    n_failed: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    metric: str = ""
    direction: str = ""
    best_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


# -- storage ------------------------------------------------------------------------------------


def study_storage_url(store_url: str) -> str:
    """The SQLAlchemy URL Optuna should use for a store at ``store_url``: the same database.

    A SQLite store must be a file (an in-memory database cannot be shared by workers).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(store_url)
    except ArgumentError:
        raise InvalidInput(f"store URL {store_url!r} is not a database URL") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InvalidInput(
                f"store URL {store_url!r} is an in-memory SQLite database; tuning workers need "
                "a database file (sqlite:///path/to/store.db) or PostgreSQL"
            )
    elif backend != "postgresql":
        raise InvalidInput(
            f"store URL {store_url!r}: tuning studies are stored in SQLite or PostgreSQL only"
        )
    return url.render_as_string(hide_password=False)


#: The storage "URL" of a study kept in an Optuna journal file: ``journal:<path>``.
_JOURNAL = "journal:"


def _storage_for(store_url: str, settings: Settings) -> str:
    """Where the study of a store at ``store_url`` lives: the store's own database, or for a
    modelloop server (which holds the database itself) a journal file in the client's home."""
    from modelloop._config import is_server_url

    if not is_server_url(store_url):
        return study_storage_url(store_url)
    server = hashlib.sha256(store_url.rstrip("/").encode()).hexdigest()[:16]
    folder = settings.home / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return _JOURNAL + str(folder / f"server-{server}.journal")


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage on the store database (retried: two processes creating Optuna's tables
    in a fresh database at the same moment can collide), or on a journal file."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith(_JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url[len(_JOURNAL) :]
        backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        return optuna.storages.JournalStorage(backend)

    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _load_study(job: Mapping[str, Any], worker: int) -> optuna.Study:
    import optuna

    cfg = job["config"]
    if cfg["pruning"]:
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=cfg["pruning_startup_trials"],
            n_warmup_steps=cfg["pruning_warmup_steps"],
        )
    else:
        pruner = optuna.pruners.NopPruner()
    # Each worker draws its own random stream, or parallel workers would propose the same params.
    sampler = optuna.samplers.TPESampler(seed=cfg["seed"] + 7919 * worker)
    study = optuna.create_study(
        storage=_open_storage(job["storage_url"]),
        study_name=job["study_name"],
        direction=cfg["direction"],
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != cfg["direction"]:
        raise Conflict(
            f"study {job['study_name']!r} exists and is to {study.direction.name.lower()} its "
            f"objective, not {cfg['direction']}; use another study name"
        )
    signature = {"metric": cfg["metric"], "space": cfg["space"]}
    stored = study.user_attrs.get(_CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(_CONFIG_ATTR, signature)
    elif stored != json.loads(json.dumps(signature)):
        raise Conflict(
            f"study {job['study_name']!r} exists with another metric or search space "
            f"({stored}); use another study name"
        )
    return study


@contextlib.contextmanager
def _study_lock(
    storage_url: str, study_name: str
) -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """Yield a factory of context managers that hold a lock shared by every worker of a study."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    digest = hashlib.sha256(f"modelloop.tune:{study_name}".encode()).digest()
    if storage_url.startswith(_JOURNAL):
        database = storage_url[len(_JOURNAL) :]
    else:
        url = make_url(storage_url)
        database = str(url.database)
    if not storage_url.startswith(_JOURNAL) and url.get_backend_name() == "postgresql":
        key = int.from_bytes(digest[:8], "big", signed=True)
        engine = create_engine(storage_url, poolclass=NullPool)

        @contextlib.contextmanager
        def pg_lock() -> Iterator[None]:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()

        try:
            yield pg_lock
        finally:
            engine.dispose()
        return

    import fcntl

    path = Path(f"{database}.tune-{digest.hex()[:16]}.lock")

    @contextlib.contextmanager
    def file_lock() -> Iterator[None]:
        with open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    yield file_lock


# -- one worker ---------------------------------------------------------------------------------


def _client_from(job: Mapping[str, Any]) -> Client:
    from modelloop._client import Client
    from modelloop._config import Settings

    s = job["settings"]
    # The token, the CA bundle and encryption keys come from the environment the parent gave
    # this process (never from the job file, which is on disk).
    return Client(
        Settings.from_env(
            home=Path(s["home"]),
            store_url=s["store_url"],
            artifact_root=s["artifact_root"],
            trusted_types=tuple(s["trusted_types"]),
            user=s["user"],
        )
    )


def _work(
    job: Mapping[str, Any],
    worker: int,
    client: Client | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Run trials of the job's study until its budget is used; return the trials this worker ran.

    ``ready`` (default: the job's ``ready_dir`` barrier of local processes) is called once the
    data is loaded and the study joined, and returns when the sibling workers are too."""
    cfg = TuneConfig.from_dict(job["config"])
    X_train, y_train = load_xy(job["train_path"], job["target"], job["features"], "training")
    data = {"X_train": X_train, "y_train": y_train}
    if not cfg.cv_folds:
        data["X_valid"], data["y_valid"] = load_xy(
            job["valid_path"], job["target"], job["features"], "validation"
        )
    study = _load_study(job, worker)
    own_client = client is None
    client = client or _client_from(job)
    # Load what every trial needs once, so the first trial's duration is its own work.
    make_model(job["model"], {})
    client.store.get_or_create_experiment(job["experiment"])
    importlib.import_module("sklearn.metrics")
    if ready is not None:
        ready()
    elif job.get("ready_dir"):
        _wait_for_siblings(Path(job["ready_dir"]), worker, job["workers"])
    deadline = time.time() + cfg.timeout_s if cfg.timeout_s else None
    ran = 0
    try:
        with _study_lock(job["storage_url"], job["study_name"]) as lock:
            while deadline is None or time.time() < deadline:
                with lock():
                    used = len(study.get_trials(deepcopy=False))
                    if cfg.n_trials is not None and used >= cfg.n_trials:
                        break
                    trial = study.ask()
                ran += 1
                run_trial(study, trial, cfg, job, worker, data, client)
    finally:
        if own_client:
            client.close()
    return ran


def _wait_for_siblings(folder: Path, worker: int, workers: int, limit_s: float = 120.0) -> None:
    """Local workers start trials together once each has loaded its data and joined the study
    (or failed), so a slow starter does not leave the whole budget to the first one."""
    (folder / f"worker-{worker}.ready").touch()
    stop = time.monotonic() + limit_s
    while time.monotonic() < stop:
        # worker-<i>.ready or worker-<i>.error.json
        if len({p.name.split(".")[0] for p in folder.glob("worker-*")}) >= workers:
            return
        time.sleep(0.05)


# -- the public entry point ---------------------------------------------------------------------


def run_study(
    config: TuneConfig,
    *,
    study_name: str,
    store_url: str,
    model_factory: str | Mapping[str, Any],
    base_params: Mapping[str, Any] | None = None,
    train_path: str | os.PathLike[str],
    valid_path: str | os.PathLike[str] | None,
    target: str,
    features: Sequence[str],
    task: str,
    workers: int = 1,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    settings: Settings | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> TuneResult:
    """Work on the study ``study_name`` in the store's database until its budget is used, with
    ``workers`` local processes (1: in this process), and return the whole study's outcome.

    ``executor="ray"`` runs the ``workers`` as Ray tasks on the cluster at ``ray_address``
    (None: RAY_ADDRESS, else a new local Ray); worker ``i`` seeds its sampler as the local
    worker ``i`` does, so one worker gives the same trials on either executor.

    ``model_factory`` is an import path (``pkg.mod:Name`` / ``pkg.mod.Name``) called with
    ``base_params`` and the trial's params, or ``{"estimator": path, "params": {...}}``.
    Trials are child runs of ``parent_run_id`` in ``experiment`` (default: the parent's, else
    ``"default"``). A worker that fails raises here, after the others have stopped, with its
    error; a study in which every trial failed raises with the first trial error.
    """
    from modelloop._client import Client
    from modelloop._config import Settings

    if task not in _TASKS:
        raise InvalidInput(f"tune task {task!r} must be one of {list(_TASKS)}")
    if METRICS[config.metric][0] != task:
        raise InvalidInput(f"tune metric {config.metric!r} does not apply to a {task} task")
    if workers < 1:
        raise InvalidInput(f"tune workers must be >= 1, got {workers}")
    if executor not in EXECUTORS:
        raise InvalidInput(f"tune executor must be one of {list(EXECUTORS)}, got {executor!r}")
    if not study_name:
        raise InvalidInput("tune study_name is empty")
    if not features:
        raise InvalidInput("tune features is empty")
    settings = settings or Settings.from_env(store_url=store_url)
    storage_url = _storage_for(store_url, settings)
    if executor == "ray" and storage_url.startswith(_JOURNAL):
        raise InvalidInput(
            "tuning on Ray needs the store's database (PostgreSQL, or a SQLite file the Ray "
            "nodes see): with a modelloop server as the store the study is a journal file in "
            "this client's home, which Ray workers cannot reach; use --executor local"
        )
    _same_database(settings.resolved_store_url, store_url)
    for what, path in (("train_path", train_path), ("valid_path", valid_path)):
        if path is None and (what == "train_path" or not config.cv_folds):
            raise InvalidInput(f"tune {what} is required")
        if path is not None and not Path(path).is_file():
            raise InvalidInput(f"tune {what} {str(path)!r} is not a file")

    desc = _model_description(model_factory, base_params)
    model = make_model(desc, {})  # the import path and base params work, before any trial
    _check_space_params(model, desc, config)

    client = Client(settings)
    try:
        if experiment is None and parent_run_id:
            parent = client.get_run(parent_run_id)
            experiment = client.store.get_experiment(parent.experiment_id).name
        elif parent_run_id:
            client.get_run(parent_run_id)  # NotFound early
        job = {
            "config": config.to_dict(),
            "study_name": study_name,
            "storage_url": storage_url,
            "model": desc,
            "train_path": str(Path(train_path).resolve()),
            "valid_path": str(Path(valid_path).resolve()) if valid_path is not None else None,
            "target": target,
            "features": list(features),
            "parent_run_id": parent_run_id,
            "experiment": experiment or "default",
            "settings": {
                "home": str(settings.home),
                "store_url": settings.resolved_store_url,
                # a server stores the artifacts itself: its clients name no artifact root
                "artifact_root": None if settings.remote else settings.resolved_artifact_root,
                "trusted_types": list(settings.trusted_types),
                "user": settings.user,
            },
        }
        _json_ready(job)
        client.store.list_experiments()  # the modelloop schema exists before Optuna's is added
        if executor == "ray":
            from modelloop.pipeline._ray import connect, run_ray_workers

            started_here = connect(ray_address)  # an address that does not answer: before work
            try:
                _load_study(job, 0)  # Optuna's tables and the study exist before the tasks run
                _raise_worker_errors(run_ray_workers(job, workers, ray_address), workers)
            finally:
                if started_here:
                    import ray

                    ray.shutdown()
        elif workers == 1:
            _work(job, 0, client)
        else:
            _load_study(job, 0)  # Optuna's tables and the study exist before the workers start
            _run_workers(job, workers, _worker_env(settings))
    finally:
        client.close()
    return _result(job)


def _model_description(
    model_factory: str | Mapping[str, Any], base_params: Mapping[str, Any] | None
) -> dict[str, Any]:
    if isinstance(model_factory, str):
        desc: dict[str, Any] = {"estimator": model_factory, "params": {}}
    elif isinstance(model_factory, Mapping) and isinstance(model_factory.get("estimator"), str):
        desc = {**dict(model_factory), "params": dict(model_factory.get("params") or {})}
    else:
        raise InvalidInput(
            "tune model_factory must be an import path or {'estimator': path, 'params': {...}}"
        )
    desc["params"].update(dict(base_params or {}))
    return desc


def _check_space_params(model: Any, desc: Mapping[str, Any], config: TuneConfig) -> None:
    """For an estimator class, every searched parameter must be one of its parameters."""
    if not isinstance(desc["estimator"], str) or not hasattr(model, "get_params"):
        return
    from modelloop.pipeline._spec import resolve_callable

    factory = resolve_callable(desc["estimator"], desc.get("base_dir"))
    if not isinstance(factory, type):
        return  # a function: its keyword arguments are not the estimator's params
    known = set(model.get_params(deep=True))
    unknown = [p for p in config.space if p not in known]
    if unknown:
        raise InvalidInput(
            f"tune space: {desc['estimator']} has no parameter(s) {unknown}; "
            f"it has {sorted(p for p in known if '__' not in p)}"
        )


def _same_database(settings_url: str, store_url: str) -> None:
    from sqlalchemy.engine import make_url

    from modelloop._config import is_server_url

    if is_server_url(settings_url) or is_server_url(store_url):
        if settings_url.rstrip("/") != store_url.rstrip("/"):
            raise InvalidInput("tune store_url and settings name different modelloop servers")
        return
    if make_url(settings_url) != make_url(study_storage_url(store_url)):
        raise InvalidInput(
            "tune store_url and settings name different databases; the study lives in the "
            "store's own database"
        )


def _json_ready(job: Mapping[str, Any]) -> None:
    try:
        json.dumps(job, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(
            f"tune inputs must be plain JSON (worker processes receive no pickled objects): {e}; "
            f"model params: {job['model']['params']!r}"
        ) from None


def _worker_env(settings: Settings) -> dict[str, str]:
    """The environment of worker processes: this one's, with the server's token and CA bundle
    of ``settings`` (secrets travel in the environment, never in the job file)."""
    env = dict(os.environ)
    if settings.token:
        env["MODELLOOP_TOKEN"] = settings.token
    if settings.ca_bundle:
        env["MODELLOOP_CA_BUNDLE"] = settings.ca_bundle
    return env


def _run_workers(
    job: Mapping[str, Any], workers: int, env: Mapping[str, str] | None = None
) -> None:
    """Start ``workers`` processes on the job and wait for all; raise the first worker error."""
    with tempfile.TemporaryDirectory(prefix="modelloop-tune-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps({**job, "ready_dir": tmp, "workers": workers}))
        procs = []
        try:
            for i in range(workers):
                cmd = [sys.executable, "-m", "modelloop.pipeline._tune", str(job_file), str(i)]
                procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env))
            codes = [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=10)
        errors = []
        for i, code in enumerate(codes):
            if code == 0:
                continue
            err_file = Path(tmp) / f"worker-{i}.error.json"
            if err_file.is_file():
                errors.append((i, json.loads(err_file.read_text())))
            else:
                errors.append(
                    (i, {"type": "ModelloopError", "message": f"exited with code {code}"})
                )
    _raise_worker_errors(errors, workers)


def _raise_worker_errors(errors: Sequence[tuple[int, Mapping[str, str]]], workers: int) -> None:
    """Raise the first worker's error (as its modelloop exception class when it is one)."""
    if errors:
        i, err = errors[0]
        cls = getattr(_exc, err["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, ModelloopError)):
            cls = ModelloopError
        others = f" ({len(errors)} of {workers} workers failed)" if len(errors) > 1 else ""
        message = (
            f"tuning worker {i + 1} of {workers} failed{others}: {err['type']}: {err['message']}"
        )
        raise cls(message)


def _result(job: Mapping[str, Any]) -> TuneResult:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(
        study_name=job["study_name"], storage=_open_storage(job["storage_url"])
    )
    trials = []
    counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in counts:
            counts[t.state] += 1
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "run_id": t.user_attrs.get(RUN_ID_ATTR),
                "worker": t.user_attrs.get("modelloop_worker"),
                "started_at": t.datetime_start.timestamp() if t.datetime_start else None,
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "error": t.user_attrs.get("error"),
            }
        )
    cfg = job["config"]
    if counts[TrialState.COMPLETE] == 0:
        errors = [t["error"] for t in trials if t["error"]]
        detail = f"; first trial error: {errors[0]}" if errors else ""
        raise ModelloopError(
            f"study {job['study_name']!r}: no trial completed ({counts[TrialState.PRUNED]} "
            f"pruned, {counts[TrialState.FAIL]} failed){detail}"
        )
    best = study.best_trial
    return TuneResult(
        study_name=job["study_name"],
        best_params=dict(best.params),
        best_value=float(best.value if best.value is not None else "nan"),
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_failed=counts[TrialState.FAIL],
        trials=trials,
        metric=cfg["metric"],
        direction=cfg["direction"],
        best_run_id=best.user_attrs.get(RUN_ID_ATTR),
    )


def _main(argv: Sequence[str]) -> int:
    """Worker process: ``python -m modelloop.pipeline._tune JOB.json WORKER_INDEX``."""
    import signal

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # close the running trial and its run on terminate
    job_file, worker = Path(argv[0]), int(argv[1])
    try:
        _work(json.loads(job_file.read_text()), worker)
    except BaseException as e:
        traceback.print_exc()
        payload = {"type": type(e).__name__, "message": str(e)}
        (job_file.parent / f"worker-{worker}.error.json").write_text(json.dumps(payload))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
