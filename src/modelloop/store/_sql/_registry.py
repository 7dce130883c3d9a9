"""Registered models, versions, aliases and the audit trail.

Every change here writes its audit event in the same transaction. Version numbers come from
``UPDATE registered_models SET latest_version = latest_version + 1 ... RETURNING``: the row lock
(PostgreSQL) or the database write lock (SQLite, BEGIN IMMEDIATE) serialises registrations, and a
rolled-back registration takes its increment with it, so numbers are unique and gap-free.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop._names import check_alias, check_model_name
from modelloop.exceptions import Conflict, InvalidInput, NotFound
from modelloop.store._records import AuditEvent, ModelVersion, RegisteredModel
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int, check_text, now_ms
from modelloop.store._sql._engine import to_json

__all__ = ["RegistryMixin", "audit_event", "model_of"]


def _version(row: Any, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row.name,
        version=row.version,
        run_id=row.run_id,
        source=row.source,
        created_at=row.created_at,
        user=row.user_name,
        description=row.description,
        tags=MappingProxyType(dict(row.tags or {})),
        aliases=aliases,
    )


#: The route an audited change came through, for audit rows written without one: the
#: control-plane server sets it around each write it makes (the library alone leaves it empty).
AUDIT_ROUTE: ContextVar[str | None] = ContextVar("modelloop_audit_route", default=None)

_INSERT_AUDIT = T.audit_events.insert()
_INSERT_AUDIT_RETURNING = T.audit_events.insert().returning(T.audit_events.c.event_id)


def _audit_row(
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    at: int | None = None,
    route: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The ``audit_events`` row of an event (its time now unless ``at``; its route the one
    :data:`AUDIT_ROUTE` holds unless given; its model the one the entity id names)."""
    return {
        "timestamp": now_ms() if at is None else at,
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "before": None if before is None else to_json(before, "audit before"),
        "after": None if after is None else to_json(after, "audit after"),
        "route": route if route is not None else AUDIT_ROUTE.get(),
        "model_name": model if model is not None else model_of(entity_type, entity_id),
    }


class RegistryMixin(SqlCore):
    """Model registry and audit trail."""

    # -- helpers -----------------------------------------------------------------------------

    def _audit(self, conn: Connection, **event: Any) -> int:
        """Append one audit row (the fields of :func:`_audit_row`) in the caller's transaction;
        return its id. Audit rows are only ever inserted: no method updates or deletes one (and
        triggers refuse it)."""
        return int(conn.execute(_INSERT_AUDIT_RETURNING, _audit_row(**event)).scalar_one())

    def _audit_many(self, conn: Connection, events: Sequence[Mapping[str, Any]]) -> None:
        """Append audit rows (each the fields of :func:`_audit_row`) in the caller's
        transaction, with one statement."""
        if events:
            conn.execute(_INSERT_AUDIT, [_audit_row(**event) for event in events])

    def _lock_model(self, conn: Connection, name: str) -> Any:
        rm = T.registered_models
        stmt = sa.select(rm).where(rm.c.name == name)
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update(key_share=True)  # serialises alias moves of one model
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(f"registered model {name!r} does not exist")
        return row

    def _aliases_of(self, conn: Connection, names: list[str]) -> dict[str, dict[str, int]]:
        al = T.aliases
        found: dict[str, dict[str, int]] = defaultdict(dict)
        q = sa.select(al.c.name, al.c.alias, al.c.version).where(al.c.name.in_(names))
        for name, alias, version in conn.execute(q.order_by(al.c.name, al.c.alias)):
            found[name][alias] = version
        return found

    def _model(self, row: Any, aliases: Mapping[str, int]) -> RegisteredModel:
        return RegisteredModel(
            name=row.name,
            created_at=row.created_at,
            updated_at=row.updated_at,
            description=row.description,
            latest_version=row.latest_version,
            aliases=MappingProxyType(dict(aliases)),
        )

    def _versions(
        self, conn: Connection, name: str, version: int | None = None
    ) -> list[ModelVersion]:
        mv = T.model_versions
        q = sa.select(mv).where(mv.c.name == name).order_by(mv.c.version)
        if version is not None:
            q = q.where(mv.c.version == version)
        rows = conn.execute(q).all()
        by_version: dict[int, list[str]] = defaultdict(list)
        for alias, v in self._aliases_of(conn, [name]).get(name, {}).items():
            by_version[v].append(alias)
        return [_version(r, tuple(sorted(by_version.get(r.version, ())))) for r in rows]

    # -- registered models -------------------------------------------------------------------

    def create_registered_model(
        self, name: str, *, description: str = "", actor: str = "unknown"
    ) -> RegisteredModel:
        name = check_model_name(name)
        actor = check_text(actor, "actor")
        if not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {description!r}")
        rm = T.registered_models
        now = now_ms()
        stmt = (
            self._insert(rm)
            .values(
                name=name, description=description, created_at=now, updated_at=now, latest_version=0
            )
            .on_conflict_do_nothing(index_elements=[rm.c.name])
            .returning(rm.c.name)
        )

        def tx(conn: Connection) -> RegisteredModel:
            if conn.execute(stmt).first() is None:
                raise Conflict(f"registered model {name!r} already exists")
            self._audit(
                conn,
                actor=actor,
                action="registered_model.create",
                entity_type="registered_model",
                entity_id=name,
                after={"name": name, "description": description},
                at=now,
            )
            return RegisteredModel(name, now, now, description, 0, MappingProxyType({}))

        return self._write(tx)

    def get_registered_model(self, name: str) -> RegisteredModel:
        name = check_text(name, "model name")

        def tx(conn: Connection) -> RegisteredModel:
            rm = T.registered_models
            row = conn.execute(sa.select(rm).where(rm.c.name == name)).first()
            if row is None:
                raise NotFound(f"registered model {name!r} does not exist")
            return self._model(row, self._aliases_of(conn, [name]).get(name, {}))

        return self._read(tx)

    def list_registered_models(self) -> list[RegisteredModel]:
        rm, al = T.registered_models, T.aliases

        def tx(conn: Connection) -> list[RegisteredModel]:
            rows = conn.execute(sa.select(rm).order_by(rm.c.name)).all()
            aliases: dict[str, dict[str, int]] = defaultdict(dict)
            q = sa.select(al.c.name, al.c.alias, al.c.version).order_by(al.c.name, al.c.alias)
            for name, alias, version in conn.execute(q):
                aliases[name][alias] = version
            return [self._model(r, aliases.get(r.name, {})) for r in rows]

        return self._read(tx)

    # -- versions ----------------------------------------------------------------------------

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
        name = check_model_name(name)
        source = check_text(source, "model source", 1 << 20)
        actor = check_text(actor, "actor")
        if run_id is not None and not isinstance(run_id, str):
            raise InvalidInput(f"run id must be a string, got {run_id!r}")
        if not isinstance(description, str):
            raise InvalidInput(f"description must be a string, got {description!r}")
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidInput(f"tags must be a mapping, got {type(tags).__name__}")
        tag_values = {check_text(k, "tag key", T.KEY_LEN): str(v) for k, v in (tags or {}).items()}
        rm, mv = T.registered_models, T.model_versions
        now = now_ms()
        create_model = (
            self._insert(rm)
            .values(name=name, description="", created_at=now, updated_at=now, latest_version=0)
            .on_conflict_do_nothing(index_elements=[rm.c.name])
            .returning(rm.c.name)
        )
        next_version = (
            sa.update(rm)
            .where(rm.c.name == name)
            .values(latest_version=rm.c.latest_version + 1, updated_at=now)
            .returning(rm.c.latest_version)
        )

        def tx(conn: Connection) -> ModelVersion:
            if run_id is not None:
                self._require_run(conn, run_id)
            if conn.execute(create_model).first() is not None:
                self._audit(
                    conn,
                    actor=actor,
                    action="registered_model.create",
                    entity_type="registered_model",
                    entity_id=name,
                    after={"name": name, "description": ""},
                    at=now,
                )
            version = conn.execute(next_version).scalar_one()
            row = {
                "name": name,
                "version": version,
                "run_id": run_id,
                "source": source,
                "created_at": now,
                "user_name": actor,
                "description": description,
                "tags": tag_values,
            }
            conn.execute(mv.insert(), row)
            self._audit(
                conn,
                actor=actor,
                action="model_version.create",
                entity_type="model_version",
                entity_id=f"{name}/{version}",
                after={"version": version, "source": source, "run_id": run_id},
                at=now,
            )
            return ModelVersion(
                name, version, run_id, source, now, actor, description,
                MappingProxyType(tag_values),
            )  # fmt: skip

        return self._write(tx)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        name = check_text(name, "model name")
        version = check_int(version, "version")

        def tx(conn: Connection) -> ModelVersion:
            found = self._versions(conn, name, version)
            if not found:
                self._check_model_exists(conn, name)
                raise NotFound(f"model {name!r} has no version {version}")
            return found[0]

        return self._read(tx)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        name = check_text(name, "model name")

        def tx(conn: Connection) -> list[ModelVersion]:
            self._check_model_exists(conn, name)
            return self._versions(conn, name)

        return self._read(tx)

    @staticmethod
    def _check_model_exists(conn: Connection, name: str) -> None:
        """``NotFound`` saying the model itself does not exist (rather than its version or
        alias), so that a misspelt name is reported as such."""
        rm = T.registered_models
        if conn.execute(sa.select(rm.c.name).where(rm.c.name == name)).first() is None:
            raise NotFound(f"registered model {name!r} does not exist")

    def set_model_version_tags(
        self, name: str, version: int, tags: Mapping[str, str], *, actor: str = "unknown"
    ) -> ModelVersion:
        name = check_text(name, "model name")
        version = check_int(version, "version")
        actor = check_text(actor, "actor")
        if not isinstance(tags, Mapping):
            raise InvalidInput(f"tags must be a mapping, got {type(tags).__name__}")
        new = {check_text(k, "tag key", T.KEY_LEN): str(v) for k, v in tags.items()}
        mv = T.model_versions
        where = sa.and_(mv.c.name == name, mv.c.version == version)
        select = sa.select(mv.c.tags).where(where)
        if self._dialect == "postgresql":
            # Read-modify-write of one JSON value: concurrent merges must wait, not overwrite
            # each other. NO KEY UPDATE leaves alias inserts (key share) on the row free.
            select = select.with_for_update(key_share=True)

        def tx(conn: Connection) -> ModelVersion:
            row = conn.execute(select).first()
            if row is None:
                raise NotFound(f"model {name!r} has no version {version}")
            before = dict(row.tags or {})
            after = {**before, **new}
            conn.execute(sa.update(mv).where(where).values(tags=after))
            self._audit(
                conn,
                actor=actor,
                action="model_version.tags",
                entity_type="model_version",
                entity_id=f"{name}/{version}",
                before=before,
                after=after,
            )
            return self._versions(conn, name, version)[0]

        return self._write(tx)

    # -- aliases -----------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str = "unknown"
    ) -> int | None:
        name = check_text(name, "model name")
        alias = check_alias(alias)
        version = check_int(version, "version")
        actor = check_text(actor, "actor")
        al, mv, rm = T.aliases, T.model_versions, T.registered_models
        ins = self._insert(al)
        upsert = ins.on_conflict_do_update(
            index_elements=[al.c.name, al.c.alias], set_={"version": ins.excluded.version}
        )

        def tx(conn: Connection) -> int | None:
            self._lock_model(conn, name)
            exists = conn.execute(
                sa.select(mv.c.version).where(mv.c.name == name, mv.c.version == version)
            ).first()
            if exists is None:
                raise NotFound(f"model {name!r} has no version {version}")
            before = conn.execute(
                sa.select(al.c.version).where(al.c.name == name, al.c.alias == alias)
            ).scalar()
            now = now_ms()
            conn.execute(upsert, {"name": name, "alias": alias, "version": version})
            conn.execute(sa.update(rm).where(rm.c.name == name).values(updated_at=now))
            self._audit(
                conn,
                actor=actor,
                action="alias.set",
                entity_type="alias",
                entity_id=f"{name}@{alias}",
                before=None if before is None else {"version": before},
                after={"version": version},
                at=now,
            )
            return before  # type: ignore[no-any-return]

        return self._write(tx)

    def delete_alias(self, name: str, alias: str, *, actor: str = "unknown") -> int:
        name = check_text(name, "model name")
        alias = check_alias(alias)
        actor = check_text(actor, "actor")
        al, rm = T.aliases, T.registered_models

        def tx(conn: Connection) -> int:
            self._lock_model(conn, name)
            where = sa.and_(al.c.name == name, al.c.alias == alias)
            before = conn.execute(sa.select(al.c.version).where(where)).scalar()
            if before is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            now = now_ms()
            conn.execute(sa.delete(al).where(where))
            conn.execute(sa.update(rm).where(rm.c.name == name).values(updated_at=now))
            self._audit(
                conn,
                actor=actor,
                action="alias.delete",
                entity_type="alias",
                entity_id=f"{name}@{alias}",
                before={"version": before},
                at=now,
            )
            return before  # type: ignore[no-any-return]

        return self._write(tx)

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        name = check_text(name, "model name")
        alias = check_alias(alias)
        al = T.aliases

        def tx(conn: Connection) -> ModelVersion:
            version = conn.execute(
                sa.select(al.c.version).where(al.c.name == name, al.c.alias == alias)
            ).scalar()
            if version is None:
                self._check_model_exists(conn, name)
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            return self._versions(conn, name, version)[0]

        return self._read(tx)

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
        limit = check_int(limit, "limit")
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        ae = T.audit_events
        stmt = sa.select(ae).order_by(ae.c.event_id.desc()).limit(limit)
        if entity_type is not None:
            stmt = stmt.where(ae.c.entity_type == entity_type)
        if entity_id is not None:
            stmt = stmt.where(ae.c.entity_id == entity_id)
        if actor is not None:
            stmt = stmt.where(ae.c.actor == actor)
        if model is not None:
            stmt = stmt.where(ae.c.model_name == model)
        if since is not None:
            stmt = stmt.where(ae.c.timestamp >= check_int(since, "since"))

        def tx(conn: Connection) -> list[AuditEvent]:
            return [audit_event(r) for r in reversed(conn.execute(stmt).all())]

        return self._read(tx)


def audit_event(r: Any) -> AuditEvent:
    """The record of an ``audit_events`` row."""
    return AuditEvent(
        event_id=r.event_id,
        timestamp=r.timestamp,
        actor=r.actor,
        action=r.action,
        entity_type=r.entity_type,
        entity_id=r.entity_id,
        before=None if r.before is None else MappingProxyType(r.before),
        after=None if r.after is None else MappingProxyType(r.after),
        route=r.route,
        model=r.model_name,
    )


def model_of(entity_type: str, entity_id: str) -> str | None:
    """The registered model a registry entity belongs to: ``m`` (registered_model), ``m/3``
    (model_version), ``m@champion`` (alias); None for other entity types. Model names hold
    neither ``/`` nor ``@``."""
    if entity_type in ("registered_model", "model"):
        return entity_id
    sep = {"model_version": "/", "alias": "@"}.get(entity_type)
    return entity_id.split(sep, 1)[0] if sep and sep in entity_id else None
