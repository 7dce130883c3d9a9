"""The loop controller's state, lease and events.

A state changes only by compare-and-set on its revision, in the same transaction as the event that
explains it, so a controller that restarts (or a second one that races it) can never apply one
transition twice. The lease says which controller acts for a model; it is taken with one upsert
whose condition (free, expired, or already ours) the database checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import Conflict, InvalidInput
from modelloop.store._records import LoopEvent, LoopLease, LoopState
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int, check_text, now_ms
from modelloop.store._sql._engine import to_json

__all__ = ["LoopMixin"]

_SHORT = 32


def _mapping(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a mapping, got {type(value).__name__}")
    return to_json(value, what)


def _state(row: Any) -> LoopState:
    return LoopState(
        model_name=row.model_name,
        state=row.state,
        revision=row.revision,
        data=MappingProxyType(dict(row.data or {})),
        updated_at=row.updated_at,
    )


def _event(row: Any) -> LoopEvent:
    return LoopEvent(
        event_id=row.event_id,
        model_name=row.model_name,
        timestamp=row.timestamp,
        kind=row.kind,
        state=row.state,
        message=row.message,
        evidence=MappingProxyType(dict(row.evidence or {})),
    )


def _added_event(event_id: int, values: Mapping[str, Any]) -> LoopEvent:
    """The event just inserted with ``values`` (from ``_event_values``)."""
    return LoopEvent(
        event_id=event_id, **{**values, "evidence": MappingProxyType(values["evidence"])}
    )


def _lease(row: Any) -> LoopLease:
    return LoopLease(
        model_name=row.model_name,
        holder=row.holder,
        acquired_at=row.acquired_at,
        expires_at=row.expires_at,
    )


class LoopMixin(SqlCore):
    """Loop states, leases and events."""

    def get_loop_state(self, model_name: str) -> LoopState | None:
        model_name = check_text(model_name, "model name")
        ls = T.loop_states
        stmt = sa.select(ls).where(ls.c.model_name == model_name)

        def tx(conn: Connection) -> LoopState | None:
            row = conn.execute(stmt).first()
            return None if row is None else _state(row)

        return self._read(tx)

    def list_loop_states(self) -> list[LoopState]:
        stmt = sa.select(T.loop_states).order_by(T.loop_states.c.model_name)
        return self._read(lambda conn: [_state(r) for r in conn.execute(stmt)])

    def _event_values(
        self,
        model_name: str,
        kind: str,
        state: str,
        message: str,
        evidence: Mapping[str, Any] | None,
        now: int,
    ) -> dict[str, Any]:
        if not isinstance(message, str):
            raise InvalidInput(f"event message must be a string, got {message!r}")
        return {
            "model_name": model_name,
            "timestamp": now,
            "kind": check_text(kind, "event kind", _SHORT),
            "state": check_text(state, "loop state", _SHORT),
            "message": message,
            "evidence": _mapping(evidence, "event evidence"),
        }

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
        model_name = check_text(model_name, "model name")
        expected = check_int(expected_revision, "expected revision")
        if expected < 0:
            raise InvalidInput(f"expected revision must be >= 0, got {expected}")
        now = now_ms() if now is None else check_int(now, "now")
        values: dict[str, Any] = {
            "model_name": model_name,
            "state": check_text(state, "loop state", _SHORT),
            "revision": expected + 1,
            "data": _mapping(data, "loop data"),
            "updated_at": now,
        }
        event = self._event_values(model_name, kind, state, message, evidence, now)
        if holder is not None:
            holder = check_text(holder, "lease holder")
        ls, ev, lease = T.loop_states, T.loop_events, T.loop_leases
        insert_first = (
            self._insert(ls)
            .on_conflict_do_nothing(index_elements=[ls.c.model_name])
            .returning(ls.c.revision)
        )
        compare_and_set = (
            ls.update()
            .where(ls.c.model_name == model_name, ls.c.revision == expected)
            .values(**{k: v for k, v in values.items() if k != "model_name"})
            .returning(ls.c.revision)
        )
        add_event = ev.insert().returning(ev.c.event_id)

        def tx(conn: Connection) -> tuple[LoopState, LoopEvent]:
            if holder is not None:
                row = conn.execute(
                    sa.select(lease.c.holder, lease.c.expires_at).where(
                        lease.c.model_name == model_name
                    )
                ).first()
                if row is None or row.holder != holder or row.expires_at <= now:
                    who = "nobody" if row is None else f"{row.holder!r}"
                    raise Conflict(
                        f"the loop of {model_name!r} is not leased to {holder!r} (held by {who})"
                    )
            done = conn.execute(insert_first if expected == 0 else compare_and_set, values)
            if done.first() is None:
                current = conn.execute(
                    sa.select(ls.c.revision).where(ls.c.model_name == model_name)
                ).first()
                found = "no state" if current is None else f"revision {current.revision}"
                raise Conflict(
                    f"the loop of {model_name!r} moved on: expected revision {expected}, "
                    f"found {found}"
                )
            event_id = conn.execute(add_event, event).scalar_one()
            return LoopState(
                model_name=model_name,
                state=values["state"],
                revision=values["revision"],
                data=MappingProxyType(values["data"]),
                updated_at=now,
            ), _added_event(event_id, event)

        return self._write(tx)

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
        model_name = check_text(model_name, "model name")
        now = now_ms() if now is None else check_int(now, "now")
        event = self._event_values(model_name, kind, state, message, evidence, now)
        add_event = T.loop_events.insert().returning(T.loop_events.c.event_id)

        def tx(conn: Connection) -> LoopEvent:
            return _added_event(conn.execute(add_event, event).scalar_one(), event)

        return self._write(tx)

    def list_loop_events(
        self, model_name: str, *, limit: int = 1000, after_id: int | None = None
    ) -> list[LoopEvent]:
        model_name = check_text(model_name, "model name")
        limit = check_int(limit, "limit")
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        ev = T.loop_events
        stmt = (
            sa.select(ev)
            .where(ev.c.model_name == model_name)
            .order_by(ev.c.event_id.desc())
            .limit(limit)
        )
        if after_id is not None:
            stmt = stmt.where(ev.c.event_id > check_int(after_id, "after_id"))
        return self._read(lambda conn: [_event(r) for r in reversed(conn.execute(stmt).all())])

    def acquire_loop_lease(
        self, model_name: str, holder: str, *, ttl_ms: int, now: int | None = None
    ) -> LoopLease:
        model_name = check_text(model_name, "model name")
        holder = check_text(holder, "lease holder")
        ttl_ms = check_int(ttl_ms, "lease ttl")
        if ttl_ms < 1:
            raise InvalidInput(f"lease ttl must be at least 1 ms, got {ttl_ms}")
        now = now_ms() if now is None else check_int(now, "now")
        lease = T.loop_leases
        ins = self._insert(lease)
        ours = lease.c.holder == ins.excluded.holder
        take = ins.on_conflict_do_update(
            index_elements=[lease.c.model_name],
            set_={
                "holder": ins.excluded.holder,
                # a renewal keeps the time it was first taken
                "acquired_at": sa.case((ours, lease.c.acquired_at), else_=ins.excluded.acquired_at),
                "expires_at": ins.excluded.expires_at,
            },
            where=ours | (lease.c.expires_at <= now),
        )
        row = {
            "model_name": model_name,
            "holder": holder,
            "acquired_at": now,
            "expires_at": now + ttl_ms,
        }
        read = sa.select(lease).where(lease.c.model_name == model_name)

        def tx(conn: Connection) -> LoopLease:
            conn.execute(take, row)
            return _lease(conn.execute(read).one())

        return self._write(tx)

    def release_loop_lease(self, model_name: str, holder: str) -> bool:
        model_name = check_text(model_name, "model name")
        holder = check_text(holder, "lease holder")
        lease = T.loop_leases
        stmt = lease.delete().where(lease.c.model_name == model_name, lease.c.holder == holder)
        return self._write(lambda conn: conn.execute(stmt).rowcount > 0)
