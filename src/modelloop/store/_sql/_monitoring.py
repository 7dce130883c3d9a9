"""Monitoring results, alert states and alert events.

Model names here are free text, not references to the registry: data monitored outside the
registry has a history too. Float columns store NaN as NULL (SQLite cannot store NaN); JSON
columns store every non-finite float as null (JSON has neither NaN nor infinity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType, SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import InvalidInput
from modelloop.store._records import AlertEventRecord, AlertRecord, MonitoringRecord
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int, check_text, now_ms
from modelloop.store._sql._engine import to_json

__all__ = ["MonitoringMixin"]

EVENT_STATUSES = ("firing", "resolved")


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else check_int(value, what)


def _opt_float(value: Any, what: str) -> float | None:
    """``value`` as a float, None for None and NaN (stored as NULL); infinities kept."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a number, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None
    return None if math.isnan(f) else f


def _check_limit(limit: Any) -> int:
    limit = check_int(limit, "limit")
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    return limit


def _metrics_json(metrics: Mapping[str, float | None] | None) -> dict[str, float | None]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidInput(f"metrics must be a mapping, got {type(metrics).__name__}")
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        key = check_text(key, "metric name", T.KEY_LEN)
        f = _opt_float(value, f"metric {key!r}")
        out[key] = f if f is None or math.isfinite(f) else None  # JSON has no infinity
    return out


def _columns(value: Sequence[str]) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInput(
            f"drifted_columns must be a sequence of column names, got {type(value).__name__}"
        )
    for c in value:
        if not isinstance(c, str):
            raise InvalidInput(f"drifted_columns holds {c!r}, which is not a column name")
    return list(value)


def _result(row: Any) -> MonitoringRecord:
    return MonitoringRecord(
        result_id=row.result_id,
        model_name=row.model_name,
        model_version=row.model_version,
        created_at=row.created_at,
        window_start=row.window_start,
        window_end=row.window_end,
        num_rows=row.num_rows,
        share_drifted=row.share_drifted,
        dataset_drift=row.dataset_drift,
        drifted_columns=tuple(row.drifted_columns or ()),
        metrics=MappingProxyType(dict(row.metrics or {})),
        payload=MappingProxyType(dict(row.payload or {})),
    )


def _alert_state(alert: AlertRecord) -> dict[str, Any]:
    """An alert record as validated column values."""
    if not isinstance(alert, AlertRecord):
        raise InvalidInput(f"alert must be an AlertRecord, got {type(alert).__name__}")
    firing = to_json(alert.firing, "alert firing")
    if not isinstance(firing, bool):
        raise InvalidInput(f"alert firing must be a bool, got {alert.firing!r}")
    if not isinstance(alert.message, str):
        raise InvalidInput(f"alert message must be a string, got {alert.message!r}")
    return {
        "model_name": check_text(alert.model_name, "model name"),
        "rule": check_text(alert.rule, "alert rule"),
        "firing": firing,
        "since": check_int(alert.since, "alert since"),
        "updated_at": check_int(alert.updated_at, "alert updated_at"),
        "value": _opt_float(alert.value, "alert value"),
        "message": alert.message,
    }


def _event_row(state: Mapping[str, Any], status: str) -> dict[str, Any]:
    """The ``alert_events`` row announcing ``state`` (from :func:`_alert_state`) as ``status``."""
    return {
        "model_name": state["model_name"],
        "rule": state["rule"],
        "status": status,
        "value": state["value"],
        "message": state["message"],
        "timestamp": state["updated_at"],
    }


def _alert(row: Any) -> AlertRecord:
    return AlertRecord(
        model_name=row.model_name,
        rule=row.rule,
        firing=row.firing,
        since=row.since,
        updated_at=row.updated_at,
        value=row.value,
        message=row.message,
    )


def _event(row: Any) -> AlertEventRecord:
    return AlertEventRecord(
        event_id=row.event_id,
        model_name=row.model_name,
        rule=row.rule,
        status=row.status,
        value=row.value,
        message=row.message,
        timestamp=row.timestamp,
    )


class MonitoringMixin(SqlCore):
    """Monitoring history and alerts."""

    # -- monitoring results ------------------------------------------------------------------

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
        model_name = check_text(model_name, "model name")
        num_rows = check_int(num_rows, "num_rows")
        if num_rows < 0:
            raise InvalidInput(f"num_rows must not be negative, got {num_rows}")
        drift = to_json(dataset_drift, "dataset_drift")  # NumPy bools become bools
        if drift is not None and not isinstance(drift, bool):
            raise InvalidInput(f"dataset_drift must be a bool or None, got {dataset_drift!r}")
        if payload is not None and not isinstance(payload, Mapping):
            raise InvalidInput(f"payload must be a mapping, got {type(payload).__name__}")
        mr = T.monitoring_results
        row = {
            "model_name": model_name,
            "model_version": _opt_int(model_version, "model_version"),
            "created_at": now_ms() if created_at is None else check_int(created_at, "created_at"),
            "window_start": _opt_int(window_start, "window_start"),
            "window_end": _opt_int(window_end, "window_end"),
            "num_rows": num_rows,
            "share_drifted": _opt_float(share_drifted, "share_drifted"),
            "dataset_drift": drift,
            "drifted_columns": _columns(drifted_columns),
            "metrics": _metrics_json(metrics),
            "payload": to_json(payload or {}, "payload"),
        }
        stmt = mr.insert().returning(mr.c.result_id)

        def tx(conn: Connection) -> MonitoringRecord:
            result_id = conn.execute(stmt, row).scalar_one()
            return _result(SimpleNamespace(result_id=result_id, **row))

        return self._write(tx)

    def list_monitoring_results(
        self, model_name: str, *, limit: int = 100, since: int | None = None
    ) -> list[MonitoringRecord]:
        model_name = check_text(model_name, "model name")
        limit = _check_limit(limit)
        mr = T.monitoring_results
        stmt = (
            sa.select(mr)
            .where(mr.c.model_name == model_name)
            .order_by(mr.c.created_at.desc(), mr.c.result_id.desc())
            .limit(limit)
        )
        if since is not None:
            stmt = stmt.where(mr.c.created_at >= check_int(since, "since"))

        def tx(conn: Connection) -> list[MonitoringRecord]:
            return [_result(r) for r in reversed(conn.execute(stmt).all())]

        return self._read(tx)

    # -- alerts ------------------------------------------------------------------------------

    def get_alert(self, model_name: str, rule: str) -> AlertRecord | None:
        model_name = check_text(model_name, "model name")
        rule = check_text(rule, "alert rule")
        al = T.alerts
        stmt = sa.select(al).where(al.c.model_name == model_name, al.c.rule == rule)

        def tx(conn: Connection) -> AlertRecord | None:
            row = conn.execute(stmt).first()
            return None if row is None else _alert(row)

        return self._read(tx)

    def transition_alert(self, alert: AlertRecord) -> AlertEventRecord | None:
        state = _alert_state(alert)
        al, ev = T.alerts, T.alert_events
        key = (al.c.model_name == state["model_name"]) & (al.c.rule == state["rule"])
        # FOR NO KEY UPDATE on PostgreSQL (ignored by SQLite, where BEGIN IMMEDIATE serialises)
        lock = (
            sa.select(al.c.firing, al.c.since, al.c.updated_at)
            .where(key)
            .with_for_update(key_share=True)
        )
        insert_new = (
            self._insert(al)
            .on_conflict_do_nothing(index_elements=[al.c.model_name, al.c.rule])
            .returning(al.c.rule)
        )
        add_event = ev.insert().returning(ev.c.event_id)

        def tx(conn: Connection) -> AlertEventRecord | None:
            prev = conn.execute(lock).first()
            if prev is None:
                if conn.execute(insert_new, state).first() is None:
                    prev = conn.execute(lock).first()  # another caller created it meanwhile
                elif not state["firing"]:
                    return None
            if prev is not None:
                if state["updated_at"] < prev.updated_at:
                    return None  # an older evaluation committing late never overrides a newer one
                changed = bool(prev.firing) != state["firing"]
                values = (
                    dict(state)
                    if changed
                    else {k: state[k] for k in ("updated_at", "value", "message")}
                )
                conn.execute(al.update().where(key).values(**values))
                if not changed:
                    return None
            event = _event_row(state, "firing" if state["firing"] else "resolved")
            event_id = conn.execute(add_event, event).scalar_one()
            return AlertEventRecord(event_id=event_id, **event)

        return self._write(tx)

    def put_alert(
        self, alert: AlertRecord, *, event_status: str | None = None
    ) -> AlertEventRecord | None:
        if event_status is not None and event_status not in EVENT_STATUSES:
            raise InvalidInput(
                f"event_status must be None, 'firing' or 'resolved', got {event_status!r}"
            )
        state = _alert_state(alert)
        al, ev = T.alerts, T.alert_events
        ins = self._insert(al)
        upsert = ins.on_conflict_do_update(
            index_elements=[al.c.model_name, al.c.rule],
            set_={
                c: ins.excluded[c] for c in ("firing", "since", "updated_at", "value", "message")
            },
        )
        event = None if event_status is None else _event_row(state, event_status)
        add_event = ev.insert().returning(ev.c.event_id)

        def tx(conn: Connection) -> AlertEventRecord | None:
            conn.execute(upsert, state)
            if event is None:
                return None
            event_id = conn.execute(add_event, event).scalar_one()
            return AlertEventRecord(event_id=event_id, **event)

        return self._write(tx)

    def list_alerts(
        self, model_name: str | None = None, *, firing_only: bool = False
    ) -> list[AlertRecord]:
        al = T.alerts
        stmt = sa.select(al).order_by(al.c.model_name, al.c.rule)
        if model_name is not None:
            stmt = stmt.where(al.c.model_name == check_text(model_name, "model name"))
        if firing_only:
            stmt = stmt.where(al.c.firing.is_(True))
        return self._read(lambda conn: [_alert(r) for r in conn.execute(stmt)])

    def list_alert_events(
        self, model_name: str | None = None, *, limit: int = 1000
    ) -> list[AlertEventRecord]:
        limit = _check_limit(limit)
        ev = T.alert_events
        stmt = sa.select(ev).order_by(ev.c.event_id.desc()).limit(limit)
        if model_name is not None:
            stmt = stmt.where(ev.c.model_name == check_text(model_name, "model name"))
        return self._read(lambda conn: [_event(r) for r in reversed(conn.execute(stmt).all())])
