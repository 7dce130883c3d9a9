"""Experiments, runs, params, tags, metrics and run artifacts."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType, SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.artifacts import validate_artifact_path
from modelloop.exceptions import ArtifactCorrupted, Conflict, InvalidInput, NotFound
from modelloop.store._owner import STALE_AFTER_MS
from modelloop.store._records import Experiment, Metric, Run, RunArtifact, RunOwner, RunStatus
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int, check_text, now_ms, row_is_stale
from modelloop.store._sql._names import generate_run_name

__all__ = ["STALE_TAG", "MetricColumns", "TrackingMixin"]

#: Tag set on a run ended by :meth:`TrackingMixin.end_stale_runs`, saying why.
STALE_TAG = "modelloop.stale_reason"

_METRIC_COLUMNS = ("run_id", "key", "value", "step", "timestamp")
_DIGEST = re.compile(r"[0-9a-f]{64}")
#: Paths per ``IN (...)`` list: far below every backend's bound-parameter limit.
_IN_CHUNK = 500


@dataclass(frozen=True)
class MetricColumns:
    """Metric values as columns, one entry per value in each list: what the control-plane
    server receives, taken by :meth:`TrackingMixin.log_metrics` and ``end_run`` as they are
    (checked like :class:`Metric` values, without building one object per value)."""

    keys: list[Any]
    values: list[Any]
    steps: list[Any]
    timestamps: list[Any]

    def __len__(self) -> int:
        return len(self.keys)


# Statements of the hot paths, built once (see _core.RUN_ROW).
_EXPERIMENT_EXISTS = sa.select(T.experiments.c.experiment_id).where(
    T.experiments.c.experiment_id == sa.bindparam("experiment_id")
)
_INSERT_RUN = T.runs.insert()
_INSERT_TAGS = T.tags.insert()
_END_RUN = (
    T.runs.update()
    .where(T.runs.c.run_id == sa.bindparam("which"))
    .values(status=sa.bindparam("new_status"), end_time=sa.bindparam("new_end_time"))
)
_PARAMS_OF_KEYS = sa.select(T.params.c.key, T.params.c.value).where(
    T.params.c.run_id == sa.bindparam("run_id"),
    T.params.c.key.in_(sa.bindparam("keys", expanding=True)),
)


def _experiment(row: Any) -> Experiment:
    return Experiment(row.experiment_id, row.name, row.created_at)


def _status(value: Any) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        raise InvalidInput(
            f"run status {value!r} is not one of {', '.join(s.value for s in RunStatus)}"
        ) from None


def _artifact_row(artifact: Any) -> dict[str, Any]:
    """The ``run_artifacts`` row for a :class:`RunArtifact`, or ``InvalidInput``."""
    if not isinstance(artifact, RunArtifact):
        raise InvalidInput(f"artifacts must be RunArtifact records, got {type(artifact).__name__}")
    if not isinstance(artifact.run_id, str):
        raise InvalidInput(f"run id must be a string, got {artifact.run_id!r}")
    path = artifact.path
    normal = validate_artifact_path(path)  # InvalidInput naming the path and the problem
    if normal != path:
        raise InvalidInput(
            f"artifact path {path[:200]!r} is not in normal form; log it as {normal!r}"
        )
    digest = artifact.digest
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(
            f"artifact digest of {path!r} must be a sha256 in 64 lowercase hex digits, "
            f"got {str(digest)[:80]!r}"
        )
    size = check_int(artifact.size, f"artifact size of {path!r}")
    if size < 0:
        raise InvalidInput(f"artifact size of {path!r} must not be negative, got {size}")
    return {"run_id": artifact.run_id, "path": path, "digest": digest, "size": size}


def _run_ids(run_ids: Any) -> list[str]:
    if isinstance(run_ids, (str, bytes)) or not isinstance(run_ids, Iterable):
        raise InvalidInput(f"run_ids must be a list of run ids, got {run_ids!r}")
    ids = list(run_ids)
    for i in ids:
        if not isinstance(i, str):
            raise InvalidInput(f"run id must be a string, got {i!r}")
    return ids


def _stale_reason(row: Any) -> str:
    seen = row.start_time if row.heartbeat_at is None else row.heartbeat_at
    when = dt.datetime.fromtimestamp(seen / 1000, dt.UTC).isoformat(timespec="seconds")
    if row.owner_host is None:
        return f"ended as stale: no owner process recorded and no heartbeat since {when}"
    return (
        f"ended as stale: owner process {row.owner_pid} on host {row.owner_host} was gone or "
        f"silent; last heartbeat {when}"
    )


def _key_values(values: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what} must be a mapping of key to value, got {type(values).__name__}")
    return {check_text(k, f"{what} key", T.KEY_LEN): str(v) for k, v in values.items()}


class TrackingMixin(SqlCore):
    """The tracking half of the store contract."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # Prepared once: the statements of the hottest path, log_metrics.
        lm = T.latest_metrics
        ins = self._insert(lm)
        newer = sa.or_(
            ins.excluded.step > lm.c.step,
            sa.and_(ins.excluded.step == lm.c.step, ins.excluded.timestamp >= lm.c.timestamp),
        )
        self._upsert_latest = ins.on_conflict_do_update(
            index_elements=[lm.c.run_id, lm.c.key],
            set_={
                "value": ins.excluded.value,
                "step": ins.excluded.step,
                "timestamp": ins.excluded.timestamp,
            },
            where=newer,
        )
        self._insert_params = self._insert(T.params).on_conflict_do_nothing()
        placeholder = "?" if self._dialect == "sqlite" else "%s"
        self._insert_metrics_sql = (
            f"INSERT INTO {T.metrics.name} ({', '.join(_METRIC_COLUMNS)}) "
            f"VALUES ({', '.join([placeholder] * len(_METRIC_COLUMNS))})"
        )

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(self, name: str) -> Experiment:
        name = check_text(name, "experiment name")
        now = now_ms()
        e = T.experiments

        def tx(conn: Connection) -> Experiment:
            stmt = (
                self._insert(e)
                .values(name=name, created_at=now)
                .on_conflict_do_nothing(index_elements=[e.c.name])
                .returning(e.c.experiment_id)
            )
            new_id = conn.execute(stmt).scalar()
            if new_id is None:
                raise Conflict(f"experiment {name!r} already exists")
            return Experiment(new_id, name, now)

        return self._write(tx)

    def get_experiment(self, experiment_id: int) -> Experiment:
        experiment_id = check_int(experiment_id, "experiment id")
        e = T.experiments

        def tx(conn: Connection) -> Experiment:
            row = conn.execute(sa.select(e).where(e.c.experiment_id == experiment_id)).first()
            if row is None:
                raise NotFound(f"experiment {experiment_id} does not exist")
            return _experiment(row)

        return self._read(tx)

    def get_experiment_by_name(self, name: str) -> Experiment:
        name = check_text(name, "experiment name")
        found = self._read(lambda conn: self._experiment_named(conn, name))
        if found is None:
            raise NotFound(f"experiment {name!r} does not exist")
        return found

    def _experiment_named(self, conn: Connection, name: str) -> Experiment | None:
        e = T.experiments
        row = conn.execute(sa.select(e).where(e.c.name == name)).first()
        return None if row is None else _experiment(row)

    def get_or_create_experiment(self, name: str) -> Experiment:
        name = check_text(name, "experiment name")
        found = self._read(lambda conn: self._experiment_named(conn, name))
        if found is not None:
            return found
        now = now_ms()

        def tx(conn: Connection) -> Experiment:
            e = T.experiments
            conn.execute(
                self._insert(e)
                .values(name=name, created_at=now)
                .on_conflict_do_nothing(index_elements=[e.c.name])
            )
            return self._experiment_named(conn, name)  # type: ignore[return-value]

        return self._write(tx)

    def list_experiments(self) -> list[Experiment]:
        e = T.experiments
        stmt = sa.select(e).order_by(e.c.created_at, e.c.experiment_id)
        return self._read(lambda conn: [_experiment(r) for r in conn.execute(stmt)])

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
        experiment_id = check_int(experiment_id, "experiment id")
        name = generate_run_name() if name is None else check_text(name, "run name")
        user = check_text(user, "user")
        tag_values = _key_values(tags, "tag")
        start = now_ms() if start_time is None else check_int(start_time, "start_time")
        if owner is not None:
            if not isinstance(owner, RunOwner):
                raise InvalidInput(f"owner must be a RunOwner, got {type(owner).__name__}")
            check_text(owner.host, "owner host")
            check_int(owner.pid, "owner pid")
            if not isinstance(owner.process_key, str) or len(owner.process_key) > T.OWNER_KEY_LEN:
                raise InvalidInput(
                    f"owner process key must be a string of at most {T.OWNER_KEY_LEN} "
                    f"characters, got {str(owner.process_key)[:40]!r}"
                )
        run_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            "run_id": run_id,
            "experiment_id": experiment_id,
            "run_name": name,
            "status": RunStatus.RUNNING.value,
            "start_time": start,
            "end_time": None,
            "user_name": user,
            "owner_host": None if owner is None else owner.host,
            "owner_pid": None if owner is None else owner.pid,
            "owner_process_key": None if owner is None else owner.process_key,
            "heartbeat_at": None if owner is None else start,
        }

        def tx(conn: Connection) -> None:
            exists = conn.execute(_EXPERIMENT_EXISTS, {"experiment_id": experiment_id}).first()
            if exists is None:
                raise NotFound(f"experiment {experiment_id} does not exist")
            conn.execute(_INSERT_RUN, row)
            if tag_values:
                conn.execute(
                    _INSERT_TAGS,
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tag_values.items()],
                )

        self._write(tx)
        return Run(
            run_id=run_id,
            experiment_id=experiment_id,
            name=name,
            status=RunStatus.RUNNING,
            start_time=start,
            end_time=None,
            user=user,
            tags=MappingProxyType(tag_values),
            owner=owner,
            heartbeat_at=row["heartbeat_at"],
            stale=row_is_stale(SimpleNamespace(**row), now_ms()),  # as a read would say
        )

    def get_run(self, run_id: str) -> Run:
        def tx(conn: Connection) -> Run:
            return self._load_runs(conn, [self._run_row(conn, run_id)])[0]

        return self._read(tx)

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        end_time: int | None = None,
        metrics: Sequence[Metric] | MetricColumns = (),
    ) -> Run:
        status = _status(status)
        if status is RunStatus.RUNNING:
            raise InvalidInput(
                "a run cannot end with status RUNNING; use FINISHED, FAILED or KILLED"
            )
        end = now_ms() if end_time is None else check_int(end_time, "end_time")
        # the last values, if any, are stored in the end's transaction: both or neither
        values = self._metric_rows(run_id, metrics) if metrics else None
        params = {"which": run_id, "new_status": status.value, "new_end_time": end}

        def tx(conn: Connection) -> Run:
            row: Any = self._run_row(conn, run_id, lock=True)
            if row.status != RunStatus.RUNNING.value and row.status != status.value:
                raise Conflict(
                    f"run {run_id} already ended with status {row.status}; cannot end it as "
                    f"{status.value}"
                )
            if values is not None:
                self._insert_metric_rows(conn, *values)
            if row.status == RunStatus.RUNNING.value:
                conn.execute(_END_RUN, params)
                row = SimpleNamespace(**{**row._asdict(), "status": status.value, "end_time": end})
            return self._load_runs(conn, [row])[0]

        return self._write(tx)

    def heartbeat_runs(self, run_ids: Sequence[str], *, now: int | None = None) -> int:
        ids = sorted(set(_run_ids(run_ids)))
        at = now_ms() if now is None else check_int(now, "now")
        r = T.runs
        stmt = (
            r.update()
            .where(r.c.run_id.in_(sa.bindparam("ids", expanding=True)))
            .where(r.c.status == RunStatus.RUNNING.value)
            .values(heartbeat_at=at)
        )

        def tx(conn: Connection) -> int:
            beaten = 0
            for i in range(0, len(ids), _IN_CHUNK):
                beaten += conn.execute(stmt, {"ids": ids[i : i + _IN_CHUNK]}).rowcount
            return beaten

        return self._write(tx) if ids else 0

    def end_stale_runs(
        self,
        status: RunStatus = RunStatus.FAILED,
        *,
        stale_after_ms: int = STALE_AFTER_MS,
        now: int | None = None,
    ) -> list[Run]:
        status = _status(status)
        if status is RunStatus.RUNNING:
            raise InvalidInput("stale runs cannot end as RUNNING; use FAILED or KILLED")
        stale_after_ms = check_int(stale_after_ms, "stale_after_ms")
        if stale_after_ms < 0:
            raise InvalidInput(f"stale_after_ms must be >= 0, got {stale_after_ms}")
        at = now_ms() if now is None else check_int(now, "now")
        r = T.runs

        def tx(conn: Connection) -> list[Run]:
            running = conn.execute(
                sa.select(r).where(r.c.status == RunStatus.RUNNING.value).order_by(r.c.run_id)
            ).all()
            ended: list[str] = []
            for row in running:
                if not row_is_stale(row, at, stale_after_ms):
                    continue
                last_seen = row.start_time if row.heartbeat_at is None else row.heartbeat_at
                # Only if nothing changed since it was judged: an owner that beats or ends the
                # run meanwhile keeps it.
                done = conn.execute(
                    r.update()
                    .where(
                        r.c.run_id == row.run_id,
                        r.c.status == RunStatus.RUNNING.value,
                        r.c.heartbeat_at.is_not_distinct_from(row.heartbeat_at),
                    )
                    .values(status=status.value, end_time=max(last_seen, row.start_time))
                ).rowcount
                if done:
                    ended.append(row.run_id)
                    conn.execute(
                        self._insert(T.tags)
                        .values(run_id=row.run_id, key=STALE_TAG, value=_stale_reason(row))
                        .on_conflict_do_nothing()
                    )
            if not ended:
                return []
            rows = conn.execute(sa.select(r).where(r.c.run_id.in_(ended)).order_by(r.c.run_id))
            return self._load_runs(conn, rows.all())

        return self._write(tx)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        values = _key_values(params, "param")

        def stored(conn: Connection) -> dict[str, str]:
            found = conn.execute(_PARAMS_OF_KEYS, {"run_id": run_id, "keys": list(values)})
            return {k: v for k, v in found}

        def check(existing: Mapping[str, str]) -> None:
            for key, value in existing.items():
                if values[key] != value:
                    raise Conflict(
                        f"param {key!r} of run {run_id} is already {value!r}; "
                        f"it cannot change to {values[key]!r}"
                    )

        def tx(conn: Connection) -> None:
            self._require_run(conn, run_id)
            if not values:
                return
            existing = stored(conn)
            check(existing)
            missing = [
                {"run_id": run_id, "key": k, "value": v}
                for k, v in values.items()
                if k not in existing
            ]
            if missing:
                conn.execute(self._insert_params, missing)
                if self._dialect == "postgresql":
                    check(stored(conn))  # a concurrent transaction may have won a key

        self._write(tx)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        values = _key_values(tags, "tag")
        t = T.tags
        ins = self._insert(t)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.run_id, t.c.key], set_={"value": ins.excluded.value}
        )

        def tx(conn: Connection) -> None:
            self._require_run(conn, run_id)
            if values:
                conn.execute(
                    stmt, [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
                )

        self._write(tx)

    # -- metrics -----------------------------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: Sequence[Metric] | MetricColumns) -> None:
        rows, newest = self._metric_rows(run_id, metrics)

        def tx(conn: Connection) -> None:
            self._require_run(conn, run_id)
            if rows:
                self._insert_metric_rows(conn, rows, newest)

        self._write(tx)

    def _metric_rows(
        self, run_id: str, metrics: Sequence[Metric] | MetricColumns
    ) -> tuple[list[tuple[str, str, float | None, int, int]], list[dict[str, Any]]]:
        """The rows of checked ``metrics``, and the newest value of each key (in key order)."""
        if isinstance(metrics, MetricColumns):
            keys, values = metrics.keys, metrics.values
            steps, stamps = metrics.steps, metrics.timestamps
        else:
            try:
                keys = [m.key for m in metrics]
                values = [m.value for m in metrics]
                steps = [m.step for m in metrics]
                stamps = [m.timestamp for m in metrics]
            except (AttributeError, TypeError) as e:
                raise InvalidInput(
                    f"metrics must be Metric(key, value, step, timestamp): {e}"
                ) from None
        try:
            for key in set(keys):
                if type(key) is not str or not key or len(key) > T.KEY_LEN:
                    raise InvalidInput(
                        f"metric key must be a non-empty string of at most {T.KEY_LEN} "
                        f"characters, got {key!r}"
                    )
            floats = [v if type(v) is float else float(v) for v in values]
            steps = [v if type(v) is int else int(v) for v in steps]
            stamps = [v if type(v) is int else int(v) for v in stamps]
        except (TypeError, ValueError) as e:  # an unhashable key, a value that is no number
            raise InvalidInput(
                f"metrics must be Metric(key, value, step, timestamp): {e}"
            ) from None
        if not len(floats) == len(steps) == len(stamps) == len(keys):
            raise InvalidInput("keys, values, steps and timestamps must have the same length")
        # NULL encodes NaN (SQLite cannot hold NaN); infinities are stored as such.
        stored = [v if v == v else None for v in floats]
        rows = list(zip(repeat(run_id), keys, stored, steps, stamps))
        latest: dict[str, tuple[str, str, float | None, int, int]] = {}
        for row in rows:
            cur = latest.get(row[1])
            if cur is None or row[3] > cur[3] or (row[3] == cur[3] and row[4] >= cur[4]):
                latest[row[1]] = row
        # A fixed key order makes concurrent writers lock latest_metrics rows in the same order.
        newest = [dict(zip(_METRIC_COLUMNS, latest[k], strict=True)) for k in sorted(latest)]
        return rows, newest

    def _insert_metric_rows(
        self,
        conn: Connection,
        rows: list[tuple[str, str, float | None, int, int]],
        newest: list[dict[str, Any]],
    ) -> None:
        if rows:
            # Plain DBAPI executemany: no per-row parameter processing by SQLAlchemy.
            conn.exec_driver_sql(self._insert_metrics_sql, rows)  # type: ignore[arg-type]
            conn.execute(self._upsert_latest, newest)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        m = T.metrics
        stmt = (
            sa.select(m.c.key, m.c.value, m.c.step, m.c.timestamp)
            .where(m.c.run_id == run_id, m.c.key == key)
            .order_by(m.c.step, m.c.timestamp, m.c.metric_id)
        )

        def tx(conn: Connection) -> list[Metric]:
            self._require_run(conn, run_id)
            return [
                Metric(k, math.nan if v is None else v, s, t) for k, v, s, t in conn.execute(stmt)
            ]

        return self._read(tx)

    def count_metric_values(self, run_id: str, key: str | None = None) -> int:
        m = T.metrics
        stmt = sa.select(sa.func.count()).select_from(m).where(m.c.run_id == run_id)
        if key is not None:
            stmt = stmt.where(m.c.key == key)

        def tx(conn: Connection) -> int:
            self._require_run(conn, run_id)
            return int(conn.execute(stmt).scalar_one())

        return self._read(tx)

    # -- run artifacts -----------------------------------------------------------------------

    def log_run_artifact(self, artifact: RunArtifact) -> None:
        self.log_run_artifacts([artifact])

    def log_run_artifacts(self, artifacts: Sequence[RunArtifact]) -> None:
        if isinstance(artifacts, (str, bytes)) or not isinstance(artifacts, Iterable):
            raise InvalidInput(f"artifacts must be a list of RunArtifact, got {artifacts!r}")
        rows: dict[str, dict[str, Any]] = {}
        for artifact in artifacts:
            row = _artifact_row(artifact)
            if rows and row["run_id"] != next(iter(rows.values()))["run_id"]:
                raise InvalidInput(
                    "one batch of artifacts must belong to one run; got runs "
                    f"{next(iter(rows.values()))['run_id']!r} and {row['run_id']!r}"
                )
            seen = rows.setdefault(row["path"], row)
            if seen != row:
                raise InvalidInput(
                    f"artifact path {row['path']!r} is in the batch twice with different "
                    "digests or sizes"
                )
        if not rows:
            return
        run_id = next(iter(rows.values()))["run_id"]
        a = T.run_artifacts
        insert = self._insert(a).on_conflict_do_nothing(index_elements=[a.c.run_id, a.c.path])

        def stored(conn: Connection) -> dict[str, tuple[str, int]]:
            found: dict[str, tuple[str, int]] = {}
            paths = list(rows)
            for i in range(0, len(paths), _IN_CHUNK):
                q = sa.select(a.c.path, a.c.digest, a.c.size).where(
                    a.c.run_id == run_id, a.c.path.in_(paths[i : i + _IN_CHUNK])
                )
                found.update((p, (d, s)) for p, d, s in conn.execute(q))
            return found

        def check(existing: Mapping[str, tuple[str, int]]) -> None:
            for path, (digest, size) in existing.items():
                new = rows[path]
                if (new["digest"], new["size"]) != (digest, size):
                    raise Conflict(
                        f"artifact {path!r} of run {run_id} is already recorded with digest "
                        f"{digest} ({size} bytes); artifacts are write-once, so it cannot "
                        f"become {new['digest']} ({new['size']} bytes)"
                    )

        def tx(conn: Connection) -> None:
            self._require_run(conn, run_id)
            existing = stored(conn)
            check(existing)
            missing = [r for p, r in rows.items() if p not in existing]
            if missing:
                conn.execute(insert, missing)
                if self._dialect == "postgresql":
                    check(stored(conn))  # a concurrent transaction may have won a path

        self._write(tx)

    def list_run_artifacts(self, run_id: str, prefix: str = "") -> list[RunArtifact]:
        if not isinstance(prefix, str):
            raise InvalidInput(f"artifact prefix must be a string, got {prefix!r}")
        prefix = prefix.strip("/")
        a = T.run_artifacts
        stmt = sa.select(a).where(a.c.run_id == run_id).order_by(a.c.path)
        if prefix:
            # A string prefix test, not LIKE (no wildcards to escape) nor a range (collations
            # need not sort "/" bytewise).
            folder = prefix + "/"
            stmt = stmt.where(
                sa.or_(a.c.path == prefix, sa.func.substr(a.c.path, 1, len(folder)) == folder)
            )

        def tx(conn: Connection) -> list[RunArtifact]:
            self._require_run(conn, run_id)
            return [RunArtifact(r.run_id, r.path, r.digest, r.size) for r in conn.execute(stmt)]

        found = self._read(tx)
        for artifact in found:
            # Rows written around this store (SQL by hand, another tool) must not steer a
            # caller's file access outside the run's artifact root.
            try:
                valid = validate_artifact_path(artifact.path) == artifact.path
            except InvalidInput:
                valid = False
            if not valid:
                raise ArtifactCorrupted(
                    f"run {run_id} has a stored artifact path {artifact.path[:200]!r} that is not "
                    "a valid artifact path; the metadata store was changed outside modelloop"
                )
        return found
