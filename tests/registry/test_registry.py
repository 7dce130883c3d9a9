"""The registry through the client: versions, aliases, loading by URI, lineage, audit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelloop import ArtifactCorrupted, Client, InvalidInput, NotFound
from modelloop.registry import ModelRef, RunArtifactRef, parse_model_spec, parse_model_uri


def _train_and_log(client: Client, X, y, model) -> str:
    model.fit(X, y)
    with client.start_run("cancer") as run:
        run.log_dataset(X.assign(target=y), "cancer-train")
        run.log_model(model, "model", input_example=X.head(5))
    return run.run_id


def test_versions_aliases_and_loading_by_uri(any_client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    lr = LogisticRegression(max_iter=5000)
    rf = RandomForestClassifier(n_estimators=10, random_state=0)
    r1 = _train_and_log(any_client, X, y, lr)
    r2 = _train_and_log(any_client, X, y, rf)
    v1 = any_client.register_model(r1, "cancer")
    v2 = any_client.register_model(r2, "cancer")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.source == f"runs:/{r1}/model" and v1.run_id == r1

    assert any_client.set_alias("cancer", "champion", 1) is None
    champion = any_client.load_model("models:/cancer@champion")
    assert np.array_equal(champion.predict(X), lr.predict(X))
    assert champion.metadata["run_id"] == r1
    assert champion.metadata["dataset_digest"] == (
        any_client.store.list_run_datasets(r1)[0].dataset.digest
    )

    assert any_client.set_alias("cancer", "champion", 2) == 1
    moved = any_client.load_model("models:/cancer@champion")
    assert np.array_equal(moved.predict(X), rf.predict(X))
    assert np.array_equal(any_client.load_model("models:/cancer/1").predict(X), lr.predict(X))
    assert any_client.resolve("models:/cancer").version == 2
    assert any_client.load_model(f"runs:/{r2}/model").metadata["run_id"] == r2

    events = any_client.store.list_audit_events(entity_type="alias")
    moves = [(e.before, e.after) for e in events if e.action == "alias.set"]
    assert len(moves) == 2
    assert moves[1][0]["version"] == 1 and moves[1][1]["version"] == 2
    assert all(e.actor == "tester" for e in events)

    assert any_client.delete_alias("cancer", "champion") == 2
    with pytest.raises(NotFound):
        any_client.load_model("models:/cancer@champion")


def test_register_needs_a_logged_model(client: Client) -> None:
    with client.start_run("exp") as run:
        run.log_metric("m", 1.0)
    with pytest.raises(NotFound, match="no model package"):
        client.register_model(run.run_id, "nothing")
    with pytest.raises(NotFound):
        client.resolve("models:/nothing")


def test_corrupted_blob_is_refused_on_load(client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    run_id = _train_and_log(client, X, y, LogisticRegression(max_iter=5000))
    mv = client.register_model(run_id, "cancer")
    item = next(a for a in client.list_artifacts(run_id, "model") if a.path.endswith(".skops"))
    blob = client.artifacts.blob_path(item.digest)
    with open(blob, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactCorrupted):
        client.load_model(f"models:/cancer/{mv.version}")


def test_cached_package_is_checked_on_every_load(client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    model = LogisticRegression(max_iter=5000)
    run_id = _train_and_log(client, X, y, model)
    client.register_model(run_id, "cancer")
    first = client.load_model("models:/cancer/1")
    (first.path / "signature.json").write_text("{}")  # tamper with the local cache
    again = client.load_model("models:/cancer/1")
    assert again.signature is not None and again.signature.columns == list(X.columns)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/flights@champion", ModelRef("flights", "champion", None)),
        ("models:/flights/3", ModelRef("flights", None, 3)),
        ("models:/flights", ModelRef("flights", None, None)),
        ("runs:/" + "a" * 32 + "/model", RunArtifactRef("a" * 32, "model")),
    ],
)
def test_model_uris_parse(uri: str, expected) -> None:
    assert parse_model_uri(uri) == expected
    assert str(expected) == uri


@pytest.mark.parametrize(
    "bad",
    [
        "model:/x",
        "models:/",
        "models:/x@",
        "models:/x@12",
        "runs:/short/model",
        "runs:/" + "a" * 32 + "/../x",
        "models:/x/../y",
    ],
)
def test_bad_model_uris_are_named(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_model_uri(bad)


def test_cli_model_spec() -> None:
    assert parse_model_spec("flights@champion") == ModelRef("flights", "champion")
    assert parse_model_spec("flights/2") == ModelRef("flights", None, 2)
    with pytest.raises(InvalidInput, match="NAME@ALIAS"):
        parse_model_spec("flights@")


def test_tags_that_say_what_a_version_serves_cannot_be_passed_at_registration(
    client: Client, breast_cancer
) -> None:
    from modelloop._client import DATASET_TAG, PACKAGE_TAG, system_tags
    from modelloop.monitoring import REFERENCE_TAG, TASK_TAG
    from modelloop.registry._onnx import ONNX_TAG

    assert {PACKAGE_TAG, DATASET_TAG, ONNX_TAG, REFERENCE_TAG, TASK_TAG} == system_tags()
    X, y = breast_cancer
    run_id = _train_and_log(client, X, y, LogisticRegression(max_iter=5000))
    for tag in (PACKAGE_TAG, ONNX_TAG):
        with pytest.raises(InvalidInput, match=tag):
            client.register_model(run_id, "cancer", tags={tag: "0" * 64})
    with pytest.raises(NotFound):
        client.get_registered_model("cancer")  # nothing was created
    mv = client.register_model(run_id, "cancer", tags={"team": "risk"})
    assert mv.tags["team"] == "risk" and len(mv.tags[PACKAGE_TAG]) == 64
