"""Frozen records returned by every store. Nobody mutates a record to change the database."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, overload

__all__ = [
    "AlertEventRecord",
    "AlertRecord",
    "AuditEvent",
    "Dataset",
    "DatasetInput",
    "Experiment",
    "LoopEvent",
    "LoopLease",
    "LoopState",
    "Metric",
    "ModelVersion",
    "MonitoringRecord",
    "Page",
    "RegisteredModel",
    "Run",
    "RunArtifact",
    "RunOwner",
    "RunStatus",
]

T_co = TypeVar("T_co", covariant=True)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    # A factory, not ``default=_EMPTY``: dataclasses reject unhashable defaults such as a
    # mappingproxy. Every record still shares the one read-only empty mapping.
    return _EMPTY


class RunStatus(str, enum.Enum):  # noqa: UP042 - members compare equal to their strings
    """Lifecycle of a run. Only ``RUNNING`` may change; the others are final."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True, slots=True)
class Experiment:
    experiment_id: int
    name: str
    created_at: int  # epoch milliseconds, as every timestamp in the store


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    value: float
    step: int = 0
    timestamp: int = 0  # epoch milliseconds


@dataclass(frozen=True, slots=True)
class RunOwner:
    """The process that started a run: host name, pid, and a key telling it apart from a later
    process with the same pid (see :mod:`modelloop.store._owner`)."""

    host: str
    pid: int
    process_key: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str  # 32 lowercase hex characters
    experiment_id: int
    name: str
    status: RunStatus
    start_time: int
    end_time: int | None
    user: str
    params: Mapping[str, str] = field(default_factory=_empty)
    #: the latest value of each metric (highest step, then latest timestamp)
    metrics: Mapping[str, float] = field(default_factory=_empty)
    tags: Mapping[str, str] = field(default_factory=_empty)
    #: the process that started the run (None: started without one, e.g. before 0.1's schema 0003)
    owner: RunOwner | None = None
    #: the last time the owner said it was alive (epoch ms; None: never)
    heartbeat_at: int | None = None
    #: judged when the record was read: the run is RUNNING but its owner is gone (its process
    #: ended on this machine, or no heartbeat came for too long); ``modelloop runs gc`` ends it
    stale: bool = False

    @property
    def state(self) -> str:
        """The status to show: ``"STALE"`` for a stale run, else the stored status."""
        return "STALE" if self.stale else self.status.value


@dataclass(frozen=True, slots=True)
class RunArtifact:
    run_id: str
    path: str  # validated relative POSIX path, e.g. "model/model.skops"
    digest: str  # sha256 hex of the blob in the artifact store
    size: int


@dataclass(frozen=True, slots=True)
class Dataset:
    dataset_id: int
    name: str
    digest: str  # sha256 hex of the dataset's canonical content
    source: str  # where it came from, free text (a path, a query, a package name)
    num_rows: int
    schema: Mapping[str, Any] = field(default_factory=_empty)
    profile: Mapping[str, Any] = field(default_factory=_empty)
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class DatasetInput:
    """Lineage: a run used a dataset in a role ("train", "eval", "reference", ...)."""

    run_id: str
    dataset: Dataset
    role: str


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    created_at: int
    updated_at: int
    description: str = ""
    latest_version: int = 0
    aliases: Mapping[str, int] = field(default_factory=_empty)  # alias -> version


@dataclass(frozen=True, slots=True)
class ModelVersion:
    name: str
    version: int  # 1, 2, 3, ... unique per name, allocated by the store
    run_id: str | None
    source: str  # where the package lives, e.g. "runs:/<run_id>/model"
    created_at: int
    user: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=_empty)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_id: int
    timestamp: int
    actor: str
    action: str  # e.g. "model_version.create", "alias.set", "alias.delete"
    entity_type: str  # "registered_model", "model_version", "alias", "run", "experiment"
    entity_id: str  # e.g. "flights", "flights/3", "flights@champion", a run id
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    route: str | None = None  # "POST /api/v1/..." for a change made through the server
    model: str | None = None  # the registered model the event concerns, if any


@dataclass(frozen=True, slots=True)
class Page(Sequence[T_co]):
    """One page of results: a read-only sequence of its items, plus the token of the next page.

    ``len(page)``, ``page[0]``, ``page[-1]``, ``page[1:3]`` (a tuple), iteration, ``in`` and
    ``bool(page)`` work as on a tuple; ``page.items`` is that tuple. Pass ``next_page_token`` back
    to get the next page (None: this is the last one).
    """

    items: tuple[T_co, ...]
    next_page_token: str | None = None

    @overload
    def __getitem__(self, index: int) -> T_co: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T_co, ...]: ...

    def __getitem__(self, index: int | slice) -> T_co | tuple[T_co, ...]:
        return self.items[index]

    def __iter__(self) -> Iterator[T_co]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class MonitoringRecord:
    """One stored monitoring run of a model: the headline figures plus the full result."""

    result_id: int
    model_name: str
    model_version: int | None
    created_at: int
    window_start: int | None  # epoch ms of the window's first instant (None: unbounded)
    window_end: int | None
    num_rows: int
    share_drifted: float | None = None
    dataset_drift: bool | None = None
    drifted_columns: tuple[str, ...] = ()
    #: headline live-performance figures, e.g. {"accuracy": 0.91, "auc": 0.88}
    metrics: Mapping[str, float | None] = field(default_factory=_empty)
    #: the whole result as JSON (``MonitorResult.to_dict()``)
    payload: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The current state of one alert rule for one model."""

    model_name: str
    rule: str
    firing: bool
    since: int  # epoch ms of the last change of ``firing``
    updated_at: int
    value: float | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class AlertEventRecord:
    """A change of an alert: it started firing or it resolved."""

    event_id: int
    model_name: str
    rule: str
    status: str  # "firing" | "resolved"
    value: float | None
    message: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class LoopState:
    """Where one model's loop stands: its state, a revision that grows by one with every
    transition (the compare-and-set key), and the state's data (challenger version, stage, ...)."""

    model_name: str
    state: str
    revision: int
    data: Mapping[str, Any] = field(default_factory=_empty)
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class LoopLease:
    """Who acts for a model's loop, until when. Only the holder of an unexpired lease acts."""

    model_name: str
    holder: str
    acquired_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class LoopEvent:
    """One decision or observation of a loop, with its evidence."""

    event_id: int
    model_name: str
    timestamp: int
    kind: str  # e.g. "trigger", "retrain", "gate", "stage", "judge", "promote", "rollback"
    state: str  # the state after the event
    message: str
    evidence: Mapping[str, Any] = field(default_factory=_empty)
