"""Runs through the public tracking API, against a real SQLite file (and PostgreSQL where noted)."""

from __future__ import annotations

import hashlib
import re
import threading
import time

import numpy as np
import pytest

import modelloop
from modelloop import Client, Conflict, InvalidInput, NotFound
from modelloop.store import Metric, RunStatus


def test_run_records_params_metrics_tags_and_finishes(any_client: Client) -> None:
    with any_client.start_run("exp", name="first", tags={"team": "ml"}) as run:
        run.log_params({"max_depth": 6, "lr": 0.1})
        run.log_param("model", "rf")
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_metrics({"auc": 0.9, "f1": 0.8})
        run.set_tag("stage", "dev")
    stored = any_client.get_run(run.run_id)
    assert stored.status is RunStatus.FINISHED
    assert stored.end_time is not None and stored.end_time >= stored.start_time
    assert dict(stored.params) == {"max_depth": "6", "lr": "0.1", "model": "rf"}
    assert stored.metrics["loss"] == pytest.approx(0.2)
    assert stored.metrics["auc"] == pytest.approx(0.9)
    assert stored.tags["team"] == "ml" and stored.tags["stage"] == "dev"
    history = any_client.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert stored.user == "tester"


def test_run_that_raises_is_failed_and_keeps_what_it_logged(client: Client) -> None:
    run = client.start_run("exp", flush_interval=0)
    with pytest.raises(RuntimeError, match="boom"), run:
        run.log_param("a", 1)
        for i in range(10):
            run.log_metric("m", i, step=i)
        raise RuntimeError("boom")
    stored = client.get_run(run.run_id)
    assert stored.status is RunStatus.FAILED
    assert stored.params["a"] == "1"
    assert client.store.count_metric_values(run.run_id, "m") == 10
    assert "RuntimeError: boom" in stored.tags["modelloop.error"]


def test_metrics_are_buffered_until_a_flush_condition(client: Client) -> None:
    run = client.start_run("exp", flush_every=100, flush_interval=0)
    for i in range(99):
        run.log_metric("m", i, step=i)
    assert client.store.count_metric_values(run.run_id) == 0
    run.log_metric("m", 99, step=99)  # the 100th value fills the batch
    assert client.store.count_metric_values(run.run_id) == 100
    run.log_metric("m", 100, step=100)
    run.end()
    assert client.store.count_metric_values(run.run_id) == 101


def test_metrics_flush_periodically_while_the_run_is_open(client: Client) -> None:
    run = client.start_run("exp", flush_every=10_000, flush_interval=0.05)
    run.log_metric("m", 1.0)
    deadline = time.monotonic() + 5
    while client.store.count_metric_values(run.run_id) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.store.count_metric_values(run.run_id) == 1
    run.end()


def test_threads_share_one_run_without_losing_values(any_client: Client) -> None:
    run = any_client.start_run("exp", flush_every=97, flush_interval=0.01)

    def work(t: int) -> None:
        for i in range(500):
            run.log_metric(f"t{t}", float(i), step=i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.end()
    assert any_client.store.count_metric_values(run.run_id) == 4000
    for t in range(8):
        assert [m.step for m in any_client.get_metric_history(run.run_id, f"t{t}")] == list(
            range(500)
        )


def test_ended_run_rejects_metrics_and_bad_values_are_named(client: Client) -> None:
    run = client.start_run("exp")
    with pytest.raises(InvalidInput, match="'acc'"):
        run.log_metric("acc", "high")
    with pytest.raises(InvalidInput, match="non-empty"):
        run.log_metric("", 1.0)
    run.end()
    with pytest.raises(InvalidInput, match="ended"):
        run.log_metric("acc", 1.0)


def test_param_logged_twice_with_another_value_conflicts(client: Client) -> None:
    with client.start_run("exp") as run:
        run.log_param("depth", 3)
        run.log_param("depth", 3)
        with pytest.raises(Conflict):
            run.log_param("depth", 4)
    assert client.get_run(run.run_id).params["depth"] == "3"


def test_log_batch_writes_at_once(client: Client) -> None:
    with client.start_run("exp", flush_interval=0) as run:
        run.log_batch([Metric("m", float(i), i, 1000 + i) for i in range(1000)])
        assert client.store.count_metric_values(run.run_id, "m") == 1000


def test_artifacts_round_trip_with_digests(client: Client, tmp_path) -> None:
    src = tmp_path / "report"
    (src / "plots").mkdir(parents=True)
    (src / "summary.txt").write_text("hello")
    (src / "plots" / "roc.png").write_bytes(b"\x89PNG" + bytes(range(256)))
    single = tmp_path / "notes.md"
    single.write_text("# notes")
    with client.start_run("exp") as run:
        run.log_artifact(src)
        run.log_artifact(single, "docs/notes.md")
    paths = [a.path for a in client.list_artifacts(run.run_id)]
    assert paths == ["docs/notes.md", "report/plots/roc.png", "report/summary.txt"]
    out = client.download_artifacts(run.run_id, "report", tmp_path / "out")
    assert (out / "summary.txt").read_text() == "hello"
    assert (out / "plots" / "roc.png").read_bytes() == (src / "plots" / "roc.png").read_bytes()
    with pytest.raises(NotFound):
        client.download_artifacts(run.run_id, "missing")


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "a/%2e%2e/b", "a\\b"])
def test_artifact_paths_are_validated(client: Client, tmp_path, bad: str) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    run = client.start_run("exp")
    with pytest.raises(InvalidInput):
        run.log_artifact(f, bad)
    assert client.list_artifacts(run.run_id) == []
    run.end()


def test_log_artifact_never_follows_links_out_of_the_directory(client: Client, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the artifact store")
    secret_digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "key.pem").write_text("private")
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    (src / "same-as-a.txt").symlink_to("a.txt")  # a file link inside: stored as a.txt's content
    (src / "sub-again").symlink_to("sub", target_is_directory=True)  # a folder link inside
    run = client.start_run("links")

    leaving = [
        (src / "leak.txt", secret),  # relative to nothing: absolute target outside
        (src / "sub" / "up.txt", "../../secret.txt"),  # relative target outside
        (src / "dir-out", tmp_path / "elsewhere"),  # a folder outside
        (src / "dangling.txt", "missing.txt"),  # a link to nothing
    ]
    for link, target in leaving:
        link.symlink_to(target)
        with pytest.raises(InvalidInput, match=re.escape(repr(str(link)))):
            run.log_artifact(src)
        link.unlink()
    assert client.list_artifacts(run.run_id) == []
    assert not client.artifacts.exists(secret_digest)  # refused before any upload

    stored = {a.path: a for a in run.log_artifact(src)}
    assert sorted(stored) == ["out/a.txt", "out/same-as-a.txt", "out/sub/b.txt"]
    assert stored["out/same-as-a.txt"].digest == stored["out/a.txt"].digest
    got = client.download_artifacts(run.run_id, "out", tmp_path / "down")
    assert (got / "same-as-a.txt").read_text() == "alpha" and not (
        got / "same-as-a.txt"
    ).is_symlink()

    direct = tmp_path / "direct.txt"
    direct.symlink_to(secret)
    with pytest.raises(InvalidInput, match=r"direct\.txt. is a symbolic link"):
        run.log_artifact(direct)
    linked_dir = tmp_path / "linked-dir"
    linked_dir.symlink_to(src, target_is_directory=True)
    with pytest.raises(InvalidInput, match=r"linked-dir. is a symbolic link"):
        run.log_artifact(linked_dir)
    with pytest.raises(InvalidInput, match="symbolic link"):
        client.artifacts.put_file(direct, follow_symlinks=False)
    assert not client.artifacts.exists(secret_digest)
    assert len(client.list_artifacts(run.run_id)) == 3
    run.end()


def test_search_runs_pushes_the_issue_filter_down(
    any_client: Client, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for depth, auc in [(6, 0.85), (6, 0.75), (4, 0.95), (6, 0.9)]:
        with any_client.start_run("flights") as run:
            run.log_params({"max_depth": depth})
            run.log_metric("auc", auc)
    with any_client.start_run("other") as run:
        run.log_params({"max_depth": 6})
        run.log_metric("auc", 0.99)
    page = any_client.search_runs(
        "flights",
        filter="metrics.auc > 0.8 and params.max_depth = '6'",
        order_by=["metrics.auc DESC"],
    )
    assert [r.metrics["auc"] for r in page] == [0.9, 0.85]
    # The README's module-level example: the result is indexed like a list.
    monkeypatch.setenv("MODELLOOP_STORE_URL", store_url)
    best = modelloop.search_runs(
        "flights",
        filter="metrics.auc > 0.8 and params.max_depth = '6'",
        order_by=["metrics.auc DESC"],
        max_results=10,
    )
    top = best[0]
    assert top.metrics["auc"] == 0.9 and [r.run_id for r in best[:2]] == [r.run_id for r in page]
    assert best.next_page_token is None
    first = any_client.search_runs("flights", max_results=3)
    rest = any_client.search_runs("flights", max_results=3, page_token=first.next_page_token)
    ids = [r.run_id for r in first] + [r.run_id for r in rest]
    assert len(ids) == len(set(ids)) == 4 and rest.next_page_token is None


def test_log_dataset_records_digest_schema_and_lineage(client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    with client.start_run("exp") as run:
        ds = run.log_dataset(X.assign(target=y), "cancer", source="sklearn")
        again = run.log_dataset(X.assign(target=y), "cancer", source="sklearn")
    assert ds.dataset_id == again.dataset_id and len(ds.digest) == 64
    assert ds.num_rows == len(X)
    assert "mean radius" in ds.profile["columns"]
    links = client.store.list_run_datasets(run.run_id)
    assert [(link.role, link.dataset.digest) for link in links] == [("train", ds.digest)]


def test_module_level_api_uses_the_environment(home, breast_cancer) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = breast_cancer
    model = LogisticRegression(max_iter=5000).fit(X, y)
    with modelloop.start_run(experiment="env") as run:
        run.log_metric("acc", float(model.score(X, y)))
        run.log_model(model, "model", input_example=X.head(5))
    mv = modelloop.register_model(run, "cancer")
    modelloop.set_alias("cancer", "champion", mv.version)
    loaded = modelloop.load_model("models:/cancer@champion")
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert modelloop.get_run(run.run_id).metrics["acc"] > 0.9
    assert len(modelloop.search_runs("env", filter="metrics.acc > 0.9")) == 1
    assert (home / "modelloop.db").is_file()
