"""The metadata store contract.

Every backend implements :class:`Store`; the shared suite in ``tests/store`` runs against each.

Contract, for every method unless its docstring says otherwise:

* **Thread and process safety.** One store object may be used from many threads at once, and many
  processes may open stores on the same database. Writers never see "database is locked": a backend
  waits (SQLite: WAL + busy timeout + retry) rather than fail.
* **Atomicity.** Each method is one transaction: it either happens whole or not at all. Audit events
  for a change are written in the same transaction as the change.
* **Records out.** Methods return frozen records from :mod:`modelloop.store._records`, never live
  database rows. Mappings inside records are read-only.
* **Errors.** A missing entity raises :class:`~modelloop.exceptions.NotFound`; a change that
  contradicts stored state raises :class:`~modelloop.exceptions.Conflict`; a malformed argument
  (bad filter, empty name, bad status transition) raises
  :class:`~modelloop.exceptions.InvalidInput`; a database failure is wrapped in
  :class:`~modelloop.exceptions.StoreError`. Driver exceptions never leak.
* **Time.** Every timestamp is integer epoch milliseconds. Methods that take ``now`` use the current
  time when it is None.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

from modelloop.store._owner import STALE_AFTER_MS
from modelloop.store._records import (
    AlertEventRecord,
    AlertRecord,
    AuditEvent,
    Dataset,
    DatasetInput,
    Experiment,
    LoopEvent,
    LoopLease,
    LoopState,
    Metric,
    ModelVersion,
    MonitoringRecord,
    Page,
    RegisteredModel,
    Run,
    RunArtifact,
    RunOwner,
    RunStatus,
)

__all__ = ["Store"]


class Store(abc.ABC):
    """Experiments, runs, metrics, artifacts, datasets, registered models, aliases, audit events."""

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    def upgrade(self) -> str:
        """Bring the schema to the newest migration; return the revision now in force.

        Idempotent. A new store calls it on first use, so users rarely need to.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""

    # -- experiments -------------------------------------------------------------------------

    @abc.abstractmethod
    def create_experiment(self, name: str) -> Experiment:
        """Create an experiment. ``Conflict`` if the name is taken; ``InvalidInput`` if empty."""

    @abc.abstractmethod
    def get_experiment(self, experiment_id: int) -> Experiment:
        """The experiment with this id, or ``NotFound``."""

    @abc.abstractmethod
    def get_experiment_by_name(self, name: str) -> Experiment:
        """The experiment with this name, or ``NotFound``."""

    @abc.abstractmethod
    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment with this name, created if missing; safe when callers race."""

    @abc.abstractmethod
    def list_experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""

    # -- runs --------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_run(
        self,
        experiment_id: int,
        *,
        name: str | None = None,
        user: str = "unknown",
        tags: Mapping[str, str] | None = None,
        start_time: int | None = None,
        owner: RunOwner | None = None,
    ) -> Run:
        """Start a run (status RUNNING) with a fresh 32-hex-character id; ``NotFound`` if the
        experiment is missing. A run without a name gets a readable generated one.

        ``owner`` is the process that will log to the run and end it
        (:func:`modelloop.store._owner.current_owner`); its first heartbeat is the start time.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run:
        """The run with its params, latest metrics and tags, or ``NotFound``.

        Every read that returns runs (this, :meth:`search_runs`, :meth:`end_run`) judges each
        RUNNING run when it reads it and sets ``Run.stale`` when its owner is gone: on this
        machine its process ended (or its pid now belongs to another process); elsewhere, or
        without an owner, no heartbeat (nor start) for ``STALE_AFTER_MS`` (5 minutes). Rules:
        :mod:`modelloop.store._owner`. The stored status stays RUNNING until
        :meth:`end_stale_runs` or :meth:`end_run` changes it; filters see the stored status.
        """

    @abc.abstractmethod
    def heartbeat_runs(self, run_ids: Sequence[str], *, now: int | None = None) -> int:
        """Record that the owner of these runs is alive (``heartbeat_at = now``); runs that
        ended or do not exist are left alone. Returns how many runs were refreshed."""

    @abc.abstractmethod
    def end_stale_runs(
        self,
        status: RunStatus = RunStatus.FAILED,
        *,
        stale_after_ms: int = STALE_AFTER_MS,
        now: int | None = None,
    ) -> list[Run]:
        """End every RUNNING run that is stale (judged as in :meth:`get_run`, with
        ``stale_after_ms`` as the heartbeat timeout) with ``status`` and, as end time, its last
        heartbeat (or start); tag it ``modelloop.stale_reason``. A run that beats or ends
        between the judgement and the update is left alone. Returns the runs ended, by id.
        ``InvalidInput`` for status RUNNING or a negative timeout."""

    @abc.abstractmethod
    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        end_time: int | None = None,
        metrics: Sequence[Metric] = (),
    ) -> Run:
        """Set a final status and end time. ``InvalidInput`` for RUNNING; ``Conflict`` when the run
        already ended with another status (ending twice with the same status is a no-op).

        ``metrics``: the run's last values (a run's buffer at its end), written as
        :meth:`log_metrics` does in the same transaction as the end: both or neither."""

    @abc.abstractmethod
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params (values stored as ``str(value)``). Logging a key again with the same value
        is a no-op; with a different value it raises ``Conflict`` and writes nothing."""

    @abc.abstractmethod
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags; a tag set again is overwritten."""

    @abc.abstractmethod
    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        """Append metric values in one transaction (all rows or none) and keep each key's latest
        value (highest step, then latest timestamp) for search. NaN and +/-inf are stored as given.
        ``NotFound`` if the run is missing; ``InvalidInput`` for an empty key."""

    @abc.abstractmethod
    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value logged for one metric, ordered by step then timestamp."""

    @abc.abstractmethod
    def count_metric_values(self, run_id: str, key: str | None = None) -> int:
        """How many metric rows the run has (for one key, or all)."""

    @abc.abstractmethod
    def search_runs(
        self,
        experiment_ids: Sequence[int],
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs of the given experiments matching ``filter``, as a :class:`Page` of :class:`Run`.

        The filter is evaluated by the database, never by loading every run. Grammar: clauses
        joined by ``and`` (case-insensitive); a clause is ``<entity>.<key> <op> <value>`` where
        entity is ``metrics``, ``params``, ``tags`` or ``attributes`` (attribute keys: ``status``,
        ``run_name``, ``start_time``, ``end_time``, ``user``, ``run_id``); ``op`` is one of
        ``= != < <= > >=`` (metrics and times compare numerically; params, tags and text
        attributes accept ``=``, ``!=``, ``like``, ``ilike`` on strings in single or double quotes).
        Keys with spaces or dots are back-quoted: ``metrics.`val loss` < 1``. ``like`` is
        case-sensitive, ``ilike`` is not; a backslash escapes ``%`` and ``_``. A NaN metric
        matches only ``!=``. Runs that lack a key never match a clause on it.

        ``order_by`` items are ``"<entity>.<key> [ASC|DESC]"`` or an attribute (``start_time``);
        the default is newest first; ties are broken by run id. Pages are keyset-paginated: a
        run created while a caller pages through results never shifts or repeats a later page.
        ``InvalidInput`` names the offending part of a bad filter, order or token.
        """

    # -- run artifacts -----------------------------------------------------------------------

    @abc.abstractmethod
    def log_run_artifact(self, artifact: RunArtifact) -> None:
        """Record that a complete, stored blob is a run's artifact at a path. Call only after the
        blob is durably in the artifact store. The path must pass
        :func:`modelloop.artifacts.validate_artifact_path` unchanged (``InvalidInput`` otherwise).
        Artifacts are write-once: logging a path again with the same digest is a no-op, with
        another digest ``Conflict``."""

    @abc.abstractmethod
    def log_run_artifacts(self, artifacts: Sequence[RunArtifact]) -> None:
        """:meth:`log_run_artifact` for many artifacts of one run, in one transaction: all rows
        or none (a model package is never half recorded)."""

    @abc.abstractmethod
    def list_run_artifacts(self, run_id: str, prefix: str = "") -> list[RunArtifact]:
        """The run's artifacts whose path equals ``prefix`` or starts with ``prefix + '/'``
        (everything when empty), ordered by path. Every returned path is re-validated with
        :func:`modelloop.artifacts.validate_artifact_path`; a stored row that fails (written by
        something other than this store) raises ``ArtifactCorrupted`` rather than reaching a
        file system."""

    # -- datasets and lineage ----------------------------------------------------------------

    @abc.abstractmethod
    def create_dataset(
        self,
        *,
        name: str,
        digest: str,
        source: str,
        num_rows: int,
        schema: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Register a dataset snapshot; idempotent on (name, digest): the existing one is
        returned. ``schema`` and ``profile`` are stored as JSON, which has no NaN or infinity:
        such floats are stored as null (NumPy scalars and arrays become numbers and lists)."""

    @abc.abstractmethod
    def get_dataset(self, dataset_id: int) -> Dataset:
        """The dataset with this id, or ``NotFound``."""

    @abc.abstractmethod
    def find_datasets(self, *, name: str | None = None, digest: str | None = None) -> list[Dataset]:
        """Datasets matching the given name and/or digest, oldest first."""

    @abc.abstractmethod
    def link_dataset(self, run_id: str, dataset_id: int, role: str) -> None:
        """Record that a run used a dataset in a role; idempotent."""

    @abc.abstractmethod
    def list_run_datasets(self, run_id: str) -> list[DatasetInput]:
        """The datasets a run used, with their roles."""

    # -- registry ----------------------------------------------------------------------------

    @abc.abstractmethod
    def create_registered_model(
        self, name: str, *, description: str = "", actor: str = "unknown"
    ) -> RegisteredModel:
        """Create a registered model; ``Conflict`` if it exists; ``InvalidInput`` unless the name
        passes :func:`modelloop._names.check_model_name`. Audited."""

    @abc.abstractmethod
    def get_registered_model(self, name: str) -> RegisteredModel:
        """The model with its aliases and latest version number, or ``NotFound``."""

    @abc.abstractmethod
    def list_registered_models(self) -> list[RegisteredModel]:
        """All registered models by name."""

    @abc.abstractmethod
    def create_model_version(
        self,
        name: str,
        *,
        source: str,
        run_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        actor: str = "unknown",
    ) -> ModelVersion:
        """Add the next version of ``name`` (creating the registered model if needed).

        Version numbers are 1, 2, 3, ... per name, unique and gap-free even when many processes
        register at once. Audited.
        """

    @abc.abstractmethod
    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """One version, or ``NotFound`` (saying so when the model itself does not exist)."""

    @abc.abstractmethod
    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first; ``NotFound`` if the model is missing."""

    @abc.abstractmethod
    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str = "unknown"
    ) -> int | None:
        """Point ``name@alias`` at ``version`` atomically; return the version it pointed at before
        (None if new). ``NotFound`` if the version is missing; ``InvalidInput`` for an alias that is
        empty, all digits, or not ``[A-Za-z0-9_-]``. Audited with before and after."""

    @abc.abstractmethod
    def delete_alias(self, name: str, alias: str, *, actor: str = "unknown") -> int:
        """Remove an alias; return the version it pointed at. ``NotFound`` if missing. Audited."""

    @abc.abstractmethod
    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias points at, or ``NotFound`` (saying so when the model itself
        does not exist, rather than that it has no such alias)."""

    @abc.abstractmethod
    def set_model_version_tags(
        self, name: str, version: int, tags: Mapping[str, str], *, actor: str = "unknown"
    ) -> ModelVersion:
        """Merge tags into a version's tags (a tag set again is overwritten); ``NotFound`` if the
        version is missing. Audited (action ``model_version.tags``) with before and after."""

    # -- monitoring --------------------------------------------------------------------------

    @abc.abstractmethod
    def add_monitoring_result(
        self,
        model_name: str,
        *,
        model_version: int | None,
        window_start: int | None,
        window_end: int | None,
        num_rows: int,
        share_drifted: float | None = None,
        dataset_drift: bool | None = None,
        drifted_columns: Sequence[str] = (),
        metrics: Mapping[str, float | None] | None = None,
        payload: Mapping[str, Any] | None = None,
        created_at: int | None = None,
    ) -> MonitoringRecord:
        """Store one monitoring run. The model need not be registered (any name is accepted), so
        data monitored outside the registry has a history too. Non-finite floats in ``metrics``
        and ``payload`` are stored as null."""

    @abc.abstractmethod
    def list_monitoring_results(
        self, model_name: str, *, limit: int = 100, since: int | None = None
    ) -> list[MonitoringRecord]:
        """The newest ``limit`` results of a model (created at or after ``since``), returned
        oldest first so they chart as a time series."""

    @abc.abstractmethod
    def get_alert(self, model_name: str, rule: str) -> AlertRecord | None:
        """The state of one rule for one model, or None when the rule never ran for it."""

    @abc.abstractmethod
    def put_alert(
        self, alert: AlertRecord, *, event_status: str | None = None
    ) -> AlertEventRecord | None:
        """Insert or replace the state of (model, rule); when ``event_status`` is ``"firing"`` or
        ``"resolved"``, also append an event (same transaction) and return it."""

    @abc.abstractmethod
    def transition_alert(self, alert: AlertRecord) -> AlertEventRecord | None:
        """Apply a freshly evaluated alert state in one transaction, with the stored row locked.

        When nothing is stored and ``alert`` fires, or the stored ``firing`` differs, ``alert`` is
        stored as given and an event (``"firing"`` or ``"resolved"``) is appended and returned.
        Otherwise value, message and ``updated_at`` are updated, the stored ``since`` is kept, and
        None is returned (a first, non-firing state is stored without an event). A state older
        (``updated_at``) than the stored one is ignored. Of several callers racing on one alert,
        exactly one sees the change."""

    @abc.abstractmethod
    def list_alerts(
        self, model_name: str | None = None, *, firing_only: bool = False
    ) -> list[AlertRecord]:
        """Alert states ordered by model then rule."""

    @abc.abstractmethod
    def list_alert_events(
        self, model_name: str | None = None, *, limit: int = 1000
    ) -> list[AlertEventRecord]:
        """The newest ``limit`` alert events, returned oldest first."""

    # -- audit -------------------------------------------------------------------------------

    # -- loop controller ---------------------------------------------------------------------

    @abc.abstractmethod
    def get_loop_state(self, model_name: str) -> LoopState | None:
        """Where the model's loop stands, or None when no loop ever ran for it."""

    @abc.abstractmethod
    def list_loop_states(self) -> list[LoopState]:
        """The loop state of every model that has one, by model name."""

    @abc.abstractmethod
    def transition_loop(
        self,
        model_name: str,
        *,
        expected_revision: int,
        state: str,
        data: Mapping[str, Any],
        kind: str,
        message: str,
        evidence: Mapping[str, Any] | None = None,
        holder: str | None = None,
        now: int | None = None,
    ) -> tuple[LoopState, LoopEvent]:
        """Move the loop to ``state`` with ``data`` and append the event that says why, in one
        transaction: a compare-and-set on ``expected_revision`` (0 when no state exists yet), so
        two controllers can never both apply a transition. The new revision is the old plus one.

        ``Conflict`` when the stored revision differs, or when ``holder`` is given and does not
        hold an unexpired lease on the model. Non-finite floats inside ``data`` and ``evidence``
        are stored as null."""

    @abc.abstractmethod
    def add_loop_event(
        self,
        model_name: str,
        *,
        kind: str,
        state: str,
        message: str,
        evidence: Mapping[str, Any] | None = None,
        now: int | None = None,
    ) -> LoopEvent:
        """Append an event that changes no state (a wait, a refused lease, a server down)."""

    @abc.abstractmethod
    def list_loop_events(
        self, model_name: str, *, limit: int = 1000, after_id: int | None = None
    ) -> list[LoopEvent]:
        """The newest ``limit`` events of a model (those after ``after_id``), oldest first."""

    @abc.abstractmethod
    def acquire_loop_lease(
        self, model_name: str, holder: str, *, ttl_ms: int, now: int | None = None
    ) -> LoopLease:
        """Take or renew the model's lease for ``ttl_ms`` when it is free, expired or already
        ``holder``'s, and return it; otherwise return the other holder's lease unchanged. Safe
        when callers race: exactly one of them gets a free lease."""

    @abc.abstractmethod
    def release_loop_lease(self, model_name: str, holder: str) -> bool:
        """Give the lease up if ``holder`` has it; return whether it did."""

    @abc.abstractmethod
    def list_audit_events(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        model: str | None = None,
        since: int | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The newest ``limit`` audit events, returned oldest first; optionally only those of
        one entity type and/or id, one actor, one registered model, or at or after ``since``
        (ms since the epoch)."""
