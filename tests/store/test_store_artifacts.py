"""Run artifacts: validated write-once paths, all-or-none batches, corrupted rows refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from modelloop.exceptions import ArtifactCorrupted, Conflict, InvalidInput, NotFound
from modelloop.store import Experiment, Run, RunArtifact
from modelloop.store._sql import SqlStore

D, E, F = "d" * 64, "e" * 64, "f" * 64


def paths(store: SqlStore, run_id: str, prefix: str = "") -> list[str]:
    return [a.path for a in store.list_run_artifacts(run_id, prefix)]


def test_listing_by_prefix(store: SqlStore, run: Run) -> None:
    rid = run.run_id
    store.log_run_artifacts(
        [
            RunArtifact(rid, "model/model.skops", D, 10),
            RunArtifact(rid, "model/meta.json", E, 2),
            RunArtifact(rid, "modelx", D, 1),
        ]
    )
    store.log_run_artifact(RunArtifact(rid, "a.txt", F, 3))
    assert paths(store, rid) == ["a.txt", "model/meta.json", "model/model.skops", "modelx"]
    assert paths(store, rid, "model") == ["model/meta.json", "model/model.skops"]
    assert paths(store, rid, "model/") == ["model/meta.json", "model/model.skops"]
    assert store.list_run_artifacts(rid, "a.txt") == [RunArtifact(rid, "a.txt", F, 3)]
    assert paths(store, rid, "mod") == []


def test_artifacts_are_write_once(store: SqlStore, run: Run) -> None:
    rid = run.run_id
    first = RunArtifact(rid, "model/model.skops", D, 10)
    store.log_run_artifact(first)
    store.log_run_artifact(first)  # same digest: a no-op
    store.log_run_artifacts([first, RunArtifact(rid, "b.txt", E, 1)])
    assert store.list_run_artifacts(rid) == [RunArtifact(rid, "b.txt", E, 1), first]
    for other in (RunArtifact(rid, first.path, E, 10), RunArtifact(rid, first.path, D, 11)):
        with pytest.raises(Conflict, match=r"model/model\.skops"):
            store.log_run_artifact(other)
    assert store.list_run_artifacts(rid, "model") == [first]


def test_batch_is_all_or_none(store: SqlStore, exp: Experiment, run: Run) -> None:
    rid = run.run_id
    store.log_run_artifact(RunArtifact(rid, "kept.txt", D, 1))
    new = [RunArtifact(rid, f"pkg/{i}.bin", D, i) for i in range(5)]
    with pytest.raises(Conflict, match=r"kept\.txt"):
        store.log_run_artifacts([*new[:2], RunArtifact(rid, "kept.txt", E, 1), *new[2:]])
    with pytest.raises(InvalidInput, match=r"'pkg/\.\./x'"):
        store.log_run_artifacts([*new, RunArtifact(rid, "pkg/../x", D, 1)])
    with pytest.raises(InvalidInput, match="twice"):
        store.log_run_artifacts([*new, RunArtifact(rid, "pkg/0.bin", E, 0)])
    other = store.create_run(exp.experiment_id)
    with pytest.raises(InvalidInput, match="one run"):
        store.log_run_artifacts([*new, RunArtifact(other.run_id, "x", D, 1)])
    with pytest.raises(NotFound, match="c" * 32):
        store.log_run_artifacts([RunArtifact("c" * 32, "x", D, 1)])
    assert paths(store, rid) == ["kept.txt"] and paths(store, other.run_id) == []
    store.log_run_artifacts([])
    store.log_run_artifacts([*new, new[0]])  # a repeat within the batch is harmless
    assert paths(store, rid) == ["kept.txt", *(a.path for a in new)]


BAD_PATHS = [
    "",
    "../escaped.txt",
    "a/../../b",
    "/etc/passwd",
    "C:/x",
    "a//b",
    "a/",
    "a\\b",
    "%2e%2e/x",
    "a/./b",  # valid once normalised, but the store keeps only normal paths
    "x" * 1025,
]


def test_paths_must_be_valid_and_normal(store: SqlStore, run: Run) -> None:
    for bad in BAD_PATHS:
        with pytest.raises(InvalidInput, match="artifact path") as info:
            store.log_run_artifact(RunArtifact(run.run_id, bad, D, 1))
        assert repr(bad[:20])[:-1] in str(info.value) or bad == ""  # names the path
    assert paths(store, run.run_id) == []


def test_digest_and_size_are_checked(store: SqlStore, run: Run) -> None:
    rid = run.run_id
    for digest in ("D" * 64, "d" * 63, "d" * 65, "g" * 64, "", 7):
        with pytest.raises(InvalidInput, match="digest"):
            store.log_run_artifact(RunArtifact(rid, "x", digest, 1))  # type: ignore[arg-type]
    for size in (-1, 1.5, "3", True):
        with pytest.raises(InvalidInput, match="size"):
            store.log_run_artifact(RunArtifact(rid, "x", D, size))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="RunArtifact"):
        store.log_run_artifacts([("x", D, 1)])  # type: ignore[list-item]
    store.log_run_artifact(RunArtifact(rid, "empty", D, 0))
    assert paths(store, rid) == ["empty"]
    with pytest.raises(NotFound):
        store.list_run_artifacts("c" * 32)


HOSTILE_PATHS = ["../../escaped.txt", "/etc/passwd", "ok/../../x", "ok/./x", "ok\\..\\x"]


def test_stored_rows_with_bad_paths_are_refused(store: SqlStore, store_url: str, run: Run) -> None:
    rid = run.run_id
    store.log_run_artifact(RunArtifact(rid, "model/m.bin", D, 1))
    outsider = sa.create_engine(store_url)  # written around the store, as an attacker would
    try:
        for hostile in HOSTILE_PATHS:
            with outsider.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO run_artifacts VALUES (:r, :p, :d, 1)"),
                    {"r": rid, "p": hostile, "d": D},
                )
            with pytest.raises(ArtifactCorrupted) as info:
                store.list_run_artifacts(rid)
            assert rid in str(info.value) and repr(hostile) in str(info.value)
            # A listing that does not reach the row is unaffected.
            assert paths(store, rid, "model") == ["model/m.bin"]
            with outsider.begin() as conn:
                conn.execute(sa.text("DELETE FROM run_artifacts WHERE path = :p"), {"p": hostile})
    finally:
        outsider.dispose()
    assert paths(store, rid) == ["model/m.bin"]


def test_racing_writers_of_one_path_leave_one_winner(
    store: SqlStore, run: Run, in_threads: Callable[..., list[object]]
) -> None:
    digests = [f"{i:x}" * 64 for i in range(8)]

    def work(digest: str) -> str:
        store.log_run_artifacts([RunArtifact(run.run_id, "model/m.bin", digest, 1)])
        return digest

    outcomes = in_threads(work, digests)
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1 and len(outcomes) == len(digests)
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, str))
    assert store.list_run_artifacts(run.run_id)[0].digest == winners[0]
