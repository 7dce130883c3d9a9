"""Dataset snapshots and lineage (which run used which dataset, in which role)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.store._records import Dataset, DatasetInput
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int, check_text, now_ms
from modelloop.store._sql._engine import to_json

__all__ = ["DatasetsMixin"]


def _dataset(row: Any) -> Dataset:
    return Dataset(
        dataset_id=row.dataset_id,
        name=row.name,
        digest=row.digest,
        source=row.source,
        num_rows=row.num_rows,
        schema=MappingProxyType(row.schema or {}),
        profile=MappingProxyType(row.profile or {}),
        created_at=row.created_at,
    )


def _json_mapping(value: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"dataset {what} must be a mapping, got {type(value).__name__}")
    return to_json(value, what)  # type: ignore[no-any-return]


class DatasetsMixin(SqlCore):
    """Datasets and run lineage."""

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
        name = check_text(name, "dataset name")
        digest = check_text(digest, "dataset digest", 128)
        if not isinstance(source, str):
            raise InvalidInput(f"dataset source must be a string, got {source!r}")
        num_rows = check_int(num_rows, "num_rows")
        if num_rows < 0:
            raise InvalidInput(f"num_rows must not be negative, got {num_rows}")
        d = T.datasets
        row = {
            "name": name,
            "digest": digest,
            "source": source,
            "num_rows": num_rows,
            "schema": _json_mapping(schema, "schema"),
            "profile": _json_mapping(profile, "profile"),
            "created_at": now_ms(),
        }
        insert = (
            self._insert(d)
            .values(row)
            .on_conflict_do_nothing(index_elements=[d.c.name, d.c.digest])
        )
        select = sa.select(d).where(d.c.name == name, d.c.digest == digest)

        def tx(conn: Connection) -> Dataset:
            conn.execute(insert)
            return _dataset(conn.execute(select).one())

        existing = self._read(lambda conn: conn.execute(select).first())
        return _dataset(existing) if existing is not None else self._write(tx)

    def get_dataset(self, dataset_id: int) -> Dataset:
        dataset_id = check_int(dataset_id, "dataset id")
        d = T.datasets

        def tx(conn: Connection) -> Dataset:
            row = conn.execute(sa.select(d).where(d.c.dataset_id == dataset_id)).first()
            if row is None:
                raise NotFound(f"dataset {dataset_id} does not exist")
            return _dataset(row)

        return self._read(tx)

    def find_datasets(self, *, name: str | None = None, digest: str | None = None) -> list[Dataset]:
        d = T.datasets
        stmt = sa.select(d).order_by(d.c.created_at, d.c.dataset_id)
        if name is not None:
            stmt = stmt.where(d.c.name == name)
        if digest is not None:
            stmt = stmt.where(d.c.digest == digest)
        return self._read(lambda conn: [_dataset(r) for r in conn.execute(stmt)])

    def link_dataset(self, run_id: str, dataset_id: int, role: str) -> None:
        dataset_id = check_int(dataset_id, "dataset id")
        role = check_text(role, "dataset role", 64)
        d = T.datasets
        stmt = self._insert(T.run_datasets).on_conflict_do_nothing()

        def tx(conn: Connection) -> None:
            self._require_run(conn, run_id)
            found = conn.execute(
                sa.select(d.c.dataset_id).where(d.c.dataset_id == dataset_id)
            ).first()
            if found is None:
                raise NotFound(f"dataset {dataset_id} does not exist")
            conn.execute(stmt, {"run_id": run_id, "dataset_id": dataset_id, "role": role})

        self._write(tx)

    def list_run_datasets(self, run_id: str) -> list[DatasetInput]:
        d, rd = T.datasets, T.run_datasets
        stmt = (
            sa.select(d, rd.c.role)
            .join(rd, rd.c.dataset_id == d.c.dataset_id)
            .where(rd.c.run_id == run_id)
            .order_by(d.c.dataset_id, rd.c.role)
        )

        def tx(conn: Connection) -> list[DatasetInput]:
            self._require_run(conn, run_id)
            return [DatasetInput(run_id, _dataset(r), r.role) for r in conn.execute(stmt)]

        return self._read(tx)
