"""The store contract over HTTP: every method is one request to a modelloop server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from modelloop._names import check_alias, check_model_name
from modelloop.exceptions import InvalidInput
from modelloop.store._base import Store
from modelloop.store._http._codec import decode
from modelloop.store._http._transport import Transport
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

__all__ = ["HttpStore"]


def _seg(value: Any) -> str:
    """One URL path segment: nothing in it can reach another route."""
    return quote(str(value), safe="")


def _json(value: Any, what: str) -> Any:
    """JSON-ready as the SQL store stores it (NumPy values as numbers, non-finite as null)."""
    from modelloop.store._sql._engine import to_json

    return to_json(value, what)


def _record(value: Any, cls: type, what: str) -> Any:
    """``value`` if it is a ``cls`` record; ``InvalidInput`` as the SQL store words it."""
    if not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise InvalidInput(f"{what} must be {article} {cls.__name__}, got {type(value).__name__}")
    return value


def _json_or_raw(value: Any, what: str) -> Any:
    """Mappings and lists made JSON-ready as the SQL store stores them; other values are sent
    as they are, for the store to accept or refuse."""
    return _json(value, what) if isinstance(value, Mapping | list | tuple) else value


class HttpStore(Store):
    """A :class:`~modelloop.store.Store` on a modelloop server (``modelloop server``).

    The client holds only the server's URL and a token; the database and buckets stay behind
    the server. Thread-safe (one connection pool). Every write carries an idempotency key, so
    the bounded retries after a dropped connection never write twice. Errors arrive as the
    same exception classes the SQL store raises.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca_bundle: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._t = transport or Transport(url, token=token, ca_bundle=ca_bundle)
        self._experiments: dict[str, Experiment] = {}

    def __repr__(self) -> str:
        return f"HttpStore({self._t.url!r})"

    @property
    def url(self) -> str:
        """The server's URL."""
        return self._t.url

    @property
    def transport(self) -> Transport:
        return self._t

    # -- lifecycle ---------------------------------------------------------------------------

    def upgrade(self) -> str:
        return str(self._t.get("/store")["revision"])

    def close(self) -> None:
        self._t.close()

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str) -> Experiment:
        return decode(Experiment, self._t.write("POST", "/experiments", {"name": name}))

    def get_experiment(self, experiment_id: int) -> Experiment:
        return decode(Experiment, self._t.get(f"/experiments/{_seg(experiment_id)}"))

    def get_experiment_by_name(self, name: str) -> Experiment:
        return decode(Experiment, self._t.get("/experiments/by-name", {"name": name}))

    def get_or_create_experiment(self, name: str) -> Experiment:
        # Experiments are never renamed or deleted, so one answer per name holds for good:
        # every start_run of this client after the first saves a round trip.
        known = self._experiments.get(name) if isinstance(name, str) else None
        if known is not None:
            return known
        body = {"name": name}
        exp = decode(Experiment, self._t.write("POST", "/experiments/get-or-create", body))
        self._experiments[name] = exp
        return exp

    def list_experiments(self) -> list[Experiment]:
        return [decode(Experiment, e) for e in self._t.get("/experiments")]

    # -- runs --------------------------------------------------------------------------------

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
        body = {
            "experiment_id": experiment_id,
            "name": name,
            "user": user,
            "tags": tags,
            "start_time": start_time,
            "owner": None if owner is None else _record(owner, RunOwner, "owner"),
        }
        return decode(Run, self._t.write("POST", "/runs", body))

    def get_run(self, run_id: str) -> Run:
        return decode(Run, self._t.get(f"/runs/{_seg(run_id)}"))

    def heartbeat_runs(self, run_ids: Sequence[str], *, now: int | None = None) -> int:
        body = {"run_ids": run_ids, "now": now}
        return int(self._t.write("POST", "/runs/heartbeat", body)["refreshed"])

    def end_stale_runs(
        self,
        status: RunStatus = RunStatus.FAILED,
        *,
        stale_after_ms: int = STALE_AFTER_MS,
        now: int | None = None,
    ) -> list[Run]:
        body = {"status": status, "stale_after_ms": stale_after_ms, "now": now}
        return [decode(Run, r) for r in self._t.write("POST", "/runs/end-stale", body)]

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        end_time: int | None = None,
        metrics: Sequence[Metric] = (),
    ) -> Run:
        body: dict[str, Any] = {"status": status, "end_time": end_time}
        if metrics:  # the last buffered values ride on the end: one request, one transaction
            body.update(_metric_columns(metrics))
        return decode(Run, self._t.write("POST", f"/runs/{_seg(run_id)}/end", body))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        # values are stored as str(value): converted here, where the value's type is known
        body = {
            "params": {k: str(v) for k, v in params.items()}
            if isinstance(params, Mapping)
            else params
        }
        self._t.write("POST", f"/runs/{_seg(run_id)}/params", body)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._t.write("POST", f"/runs/{_seg(run_id)}/tags", {"tags": tags})

    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        self._t.write("POST", f"/runs/{_seg(run_id)}/metrics", _metric_columns(metrics))

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        cols = self._t.get(f"/runs/{_seg(run_id)}/metrics/history", {"key": key})
        return list(map(Metric, cols["keys"], cols["values"], cols["steps"], cols["timestamps"]))

    def count_metric_values(self, run_id: str, key: str | None = None) -> int:
        return int(self._t.get(f"/runs/{_seg(run_id)}/metrics/count", {"key": key})["count"])

    def search_runs(
        self,
        experiment_ids: Sequence[int],
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        body = {
            "experiment_ids": experiment_ids,
            "filter": filter,
            "order_by": order_by,
            "max_results": max_results,
            "page_token": page_token,
        }
        # A search writes nothing; it is a POST only because a filter may be long.
        page = self._t.write("POST", "/runs/search", body)
        return Page(tuple(decode(Run, r) for r in page["items"]), page["next_page_token"])

    # -- run artifacts -----------------------------------------------------------------------

    def log_run_artifact(self, artifact: RunArtifact) -> None:
        _record(artifact, RunArtifact, "artifacts")
        self._t.write("POST", "/runs/artifacts", {"artifacts": [artifact], "single": True})

    def log_run_artifacts(self, artifacts: Sequence[RunArtifact]) -> None:
        if not isinstance(artifacts, list | tuple):
            raise InvalidInput(f"artifacts must be a list of RunArtifact, got {artifacts!r}")
        for a in artifacts:
            _record(a, RunArtifact, "artifacts")
        self._t.write("POST", "/runs/artifacts", {"artifacts": list(artifacts)})

    def list_run_artifacts(self, run_id: str, prefix: str = "") -> list[RunArtifact]:
        items = self._t.get(f"/runs/{_seg(run_id)}/artifacts", {"prefix": prefix})
        return [decode(RunArtifact, a) for a in items]

    # -- datasets and lineage ----------------------------------------------------------------

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
        body = {
            "name": name,
            "digest": digest,
            "source": source,
            "num_rows": num_rows,
            "schema": _json_or_raw(schema, "schema"),
            "profile": _json_or_raw(profile, "profile"),
        }
        return decode(Dataset, self._t.write("POST", "/datasets", body))

    def get_dataset(self, dataset_id: int) -> Dataset:
        return decode(Dataset, self._t.get(f"/datasets/{_seg(dataset_id)}"))

    def find_datasets(self, *, name: str | None = None, digest: str | None = None) -> list[Dataset]:
        items = self._t.get("/datasets", {"name": name, "digest": digest})
        return [decode(Dataset, d) for d in items]

    def link_dataset(self, run_id: str, dataset_id: int, role: str) -> None:
        body = {"dataset_id": dataset_id, "role": role}
        self._t.write("POST", f"/runs/{_seg(run_id)}/datasets", body)

    def list_run_datasets(self, run_id: str) -> list[DatasetInput]:
        return [decode(DatasetInput, d) for d in self._t.get(f"/runs/{_seg(run_id)}/datasets")]

    # -- registry ----------------------------------------------------------------------------

    def create_registered_model(
        self, name: str, *, description: str = "", actor: str = "unknown"
    ) -> RegisteredModel:
        body = {"name": name, "description": description, "actor": actor}
        return decode(RegisteredModel, self._t.write("POST", "/models", body))

    def get_registered_model(self, name: str) -> RegisteredModel:
        return decode(RegisteredModel, self._t.get(f"/models/{_seg(name)}"))

    def list_registered_models(self) -> list[RegisteredModel]:
        return [decode(RegisteredModel, m) for m in self._t.get("/models")]

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
        check_model_name(name)  # the name is part of the route: checked before it is sent
        body = {
            "source": source,
            "run_id": run_id,
            "description": description,
            "tags": tags,
            "actor": actor,
        }
        return decode(ModelVersion, self._t.write("POST", f"/models/{_seg(name)}/versions", body))

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return decode(ModelVersion, self._t.get(f"/models/{_seg(name)}/versions/{_seg(version)}"))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return [decode(ModelVersion, v) for v in self._t.get(f"/models/{_seg(name)}/versions")]

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str = "unknown"
    ) -> int | None:
        check_alias(alias)  # part of the route: checked before it is sent
        path = f"/models/{_seg(name)}/aliases/{_seg(alias)}"
        previous = self._t.write("PUT", path, {"version": version, "actor": actor})["previous"]
        return None if previous is None else int(previous)

    def delete_alias(self, name: str, alias: str, *, actor: str = "unknown") -> int:
        check_alias(alias)
        path = f"/models/{_seg(name)}/aliases/{_seg(alias)}"
        return int(self._t.write("DELETE", path, params={"by": actor})["version"])

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        path = f"/models/{_seg(name)}/aliases/{_seg(alias)}"
        return decode(ModelVersion, self._t.get(path))

    def set_model_version_tags(
        self, name: str, version: int, tags: Mapping[str, str], *, actor: str = "unknown"
    ) -> ModelVersion:
        path = f"/models/{_seg(name)}/versions/{_seg(version)}/tags"
        body = {"tags": tags, "actor": actor}
        return decode(ModelVersion, self._t.write("PATCH", path, body))

    # -- monitoring --------------------------------------------------------------------------

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
        body = {
            "model_name": model_name,
            "model_version": model_version,
            "window_start": window_start,
            "window_end": window_end,
            "num_rows": num_rows,
            "share_drifted": share_drifted,
            "dataset_drift": dataset_drift,
            "drifted_columns": drifted_columns,
            "metrics": _json_or_raw(metrics, "metrics"),
            "payload": _json_or_raw(payload, "payload"),
            "created_at": created_at,
        }
        return decode(MonitoringRecord, self._t.write("POST", "/monitoring/results", body))

    def list_monitoring_results(
        self, model_name: str, *, limit: int = 100, since: int | None = None
    ) -> list[MonitoringRecord]:
        params = {"model_name": model_name, "limit": limit, "since": since}
        return [decode(MonitoringRecord, r) for r in self._t.get("/monitoring/results", params)]

    def get_alert(self, model_name: str, rule: str) -> AlertRecord | None:
        got = self._t.get("/alerts/state", {"model_name": model_name, "rule": rule})["alert"]
        return None if got is None else decode(AlertRecord, got)

    def put_alert(
        self, alert: AlertRecord, *, event_status: str | None = None
    ) -> AlertEventRecord | None:
        body = {"alert": _record(alert, AlertRecord, "alert"), "event_status": event_status}
        event = self._t.write("PUT", "/alerts", body)["event"]
        return None if event is None else decode(AlertEventRecord, event)

    def transition_alert(self, alert: AlertRecord) -> AlertEventRecord | None:
        body = _record(alert, AlertRecord, "alert")
        event = self._t.write("POST", "/alerts/transition", body)["event"]
        return None if event is None else decode(AlertEventRecord, event)

    def list_alerts(
        self, model_name: str | None = None, *, firing_only: bool = False
    ) -> list[AlertRecord]:
        params = {"model_name": model_name, "firing_only": firing_only}
        return [decode(AlertRecord, a) for a in self._t.get("/alerts", params)]

    def list_alert_events(
        self, model_name: str | None = None, *, limit: int = 1000
    ) -> list[AlertEventRecord]:
        params = {"model_name": model_name, "limit": limit}
        return [decode(AlertEventRecord, e) for e in self._t.get("/alerts/events", params)]

    # -- loop controller ---------------------------------------------------------------------

    def get_loop_state(self, model_name: str) -> LoopState | None:
        got = self._t.get(f"/loop/states/{_seg(model_name)}")["state"]
        return None if got is None else decode(LoopState, got)

    def list_loop_states(self) -> list[LoopState]:
        return [decode(LoopState, s) for s in self._t.get("/loop/states")]

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
        body = {
            "expected_revision": expected_revision,
            "state": state,
            "data": _json_or_raw(data, "data"),
            "kind": kind,
            "message": message,
            "evidence": _json_or_raw(evidence, "evidence"),
            "holder": holder,
            "now": now,
        }
        got = self._t.write("POST", f"/loop/states/{_seg(model_name)}/transition", body)
        return decode(LoopState, got["state"]), decode(LoopEvent, got["event"])

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
        body = {
            "kind": kind,
            "state": state,
            "message": message,
            "evidence": _json_or_raw(evidence, "evidence"),
            "now": now,
        }
        return decode(LoopEvent, self._t.write("POST", f"/loop/events/{_seg(model_name)}", body))

    def list_loop_events(
        self, model_name: str, *, limit: int = 1000, after_id: int | None = None
    ) -> list[LoopEvent]:
        params = {"limit": limit, "after_id": after_id}
        return [
            decode(LoopEvent, e) for e in self._t.get(f"/loop/events/{_seg(model_name)}", params)
        ]

    def acquire_loop_lease(
        self, model_name: str, holder: str, *, ttl_ms: int, now: int | None = None
    ) -> LoopLease:
        body = {"holder": holder, "ttl_ms": ttl_ms, "now": now}
        return decode(LoopLease, self._t.write("POST", f"/loop/leases/{_seg(model_name)}", body))

    def release_loop_lease(self, model_name: str, holder: str) -> bool:
        path = f"/loop/leases/{_seg(model_name)}"
        return bool(self._t.write("DELETE", path, params={"holder": holder})["released"])

    # -- audit -------------------------------------------------------------------------------

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
        params = {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "user": actor,
            "model": model,
            "since": since,
            "limit": limit,
        }
        return [decode(AuditEvent, e) for e in self._t.get("/audit", params)]


def _metric_columns(metrics: Sequence[Metric]) -> dict[str, list[Any]]:
    """A batch of metric values as the server takes it: one list per field."""
    for m in metrics:
        _record(m, Metric, "metrics")
    return {
        "keys": [m.key for m in metrics],
        "values": [m.value for m in metrics],
        "steps": [m.step for m in metrics],
        "timestamps": [m.timestamp for m in metrics],
    }
