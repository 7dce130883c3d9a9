"""A version's registered ONNX form: converted and checked once, stored as blobs, tagged, and read
back only for the package it was made from."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier

from modelloop import ArtifactCorrupted, Client, InvalidInput
from modelloop.models import Signature
from modelloop.models._onnx import TIE_ATOL
from modelloop.models._package import read_signature
from modelloop.registry._onnx import ONNX_TAG, load_registered_onnx

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


def _register(client: Client, model, X: pd.DataFrame, y: pd.Series, name: str = "cancer") -> int:
    model.fit(X, y)
    with client.start_run("onnx-form") as run:
        run.log_model(model, "model", input_example=X.head(10))
    mv = client.register_model(run.run_id, name)
    client.set_alias(name, "champion", mv.version)
    return mv.version


def _signature(client: Client, uri: str) -> Signature:
    signature = read_signature(client.fetch_model(uri))
    assert signature is not None
    return signature


def test_converted_form_is_attached_and_predicts_like_scikit_learn(
    any_client: Client, breast_cancer
) -> None:
    X, y = breast_cancer
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    version = _register(any_client, forest, X, y)

    # the check data may carry other columns (the label here): they are ignored
    done = any_client.convert_model("cancer@champion", check_data=X.assign(target=y).head(300))

    assert done.converted and done.reason == ""
    assert (done.name, done.version, done.check_rows) == ("cancer", version, 300)
    mv = any_client.get_model_version("cancer", version)
    description = json.loads(any_client.artifacts.read_bytes(mv.tags[ONNX_TAG]))
    assert description["onnx_sha256"] == done.onnx_sha256
    assert description["package_digest"] == mv.tags["modelloop.package_digest"]
    assert description["check_rows"] == 300
    assert set(description["libraries"]) == {"scikit-learn", "skl2onnx", "onnx", "onnxruntime"}

    predictor = load_registered_onnx(any_client, mv, _signature(any_client, "models:/cancer/1"))
    assert predictor is not None and predictor.check_rows == 300
    assert predictor.labels_from_proba and predictor.tie_atol == TIE_ATOL  # a forest averages

    frame = _signature(any_client, "models:/cancer/1").validate(X)
    labels, proba = predictor.predict_both(frame)
    np.testing.assert_array_equal(labels, forest.predict(X))
    np.testing.assert_allclose(proba, forest.predict_proba(X), atol=1e-5)


def test_a_model_that_does_not_convert_is_declined_without_a_tag(client: Client, breast_cancer):
    X, y = breast_cancer
    version = _register(client, DummyClassifier(), X, y, name="dummy")

    done = client.convert_model(f"dummy/{version}")

    assert not done.converted
    assert "DummyClassifier" in done.reason
    assert ONNX_TAG not in client.get_model_version("dummy", version).tags
    mv = client.get_model_version("dummy", version)
    assert load_registered_onnx(client, mv, _signature(client, "models:/dummy/1")) is None


def test_check_data_must_hold_the_input_columns(client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    _register(client, RandomForestClassifier(n_estimators=5, random_state=0), X, y)
    with pytest.raises(InvalidInput, match="mean radius"):
        client.convert_model("cancer", check_data=X.drop(columns=["mean radius"]))
    with pytest.raises(InvalidInput, match="no rows"):
        client.convert_model("cancer", check_data=X.head(0))
    assert ONNX_TAG not in client.get_model_version("cancer", 1).tags


def test_disagreement_on_the_check_data_declines(client: Client) -> None:
    """Rows on a logistic regression's decision boundary: float32 input flips some labels. The
    input example (rows away from it) agrees; the check data given does not."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression()
    version = _register(client, model, X, (X["a"] + X["b"] > 0).astype(int), name="edge")
    w, b = model.coef_[0], model.intercept_[0]
    a = rng.normal(size=500)
    boundary = pd.DataFrame({"a": a, "b": -(b + w[0] * a) / w[1] + rng.normal(0, 1e-7, 500)})

    done = client.convert_model("edge@champion", check_data=boundary)

    assert not done.converted
    assert " of 500 check rows differ" in done.reason
    assert ONNX_TAG not in client.get_model_version("edge", version).tags
    assert client.convert_model("edge@champion").converted  # the input example alone agrees
    mv = client.get_model_version("edge", version)
    form = load_registered_onnx(client, mv, _signature(client, "models:/edge/1"))
    assert form is not None and form.labels_from_proba and form.tie_atol == 0.0  # continuous

    # checked again on the boundary rows, the attached form no longer passes: it is detached
    again = client.convert_model("edge@champion", check_data=boundary)
    assert not again.converted and "the ONNX form attached before was removed" in again.reason
    mv = client.get_model_version("edge", version)
    assert mv.tags[ONNX_TAG] == ""
    assert load_registered_onnx(client, mv, _signature(client, "models:/edge/1")) is None
    shown = client.list_model_versions("edge")
    assert not shown[0].tags.get(ONNX_TAG)


def test_a_form_is_used_only_with_the_package_it_was_made_from(client, breast_cancer) -> None:
    X, y = breast_cancer
    _register(client, RandomForestClassifier(n_estimators=5, random_state=0), X, y)
    _register(client, RandomForestClassifier(n_estimators=5, random_state=1), X, y)
    assert client.convert_model("cancer/1").converted
    first = client.get_model_version("cancer", 1)
    signature = _signature(client, "models:/cancer/2")

    # version 2 pointed at version 1's form (a hand-edited tag): refused, not served
    client.store.set_model_version_tags("cancer", 2, {ONNX_TAG: first.tags[ONNX_TAG]})
    with pytest.raises(ArtifactCorrupted, match="another package"):
        load_registered_onnx(client, client.get_model_version("cancer", 2), signature)

    # a description blob that is not one
    bogus = client.artifacts.put_bytes(b'{"hello": 1}').digest
    client.store.set_model_version_tags("cancer", 2, {ONNX_TAG: bogus})
    with pytest.raises(ArtifactCorrupted, match="unreadable description"):
        load_registered_onnx(client, client.get_model_version("cancer", 2), signature)


def test_a_damaged_onnx_blob_is_refused(client: Client, breast_cancer) -> None:
    X, y = breast_cancer
    _register(client, RandomForestClassifier(n_estimators=5, random_state=0), X, y)
    done = client.convert_model("cancer/1")
    assert done.converted and done.onnx_sha256
    blob = client.artifacts.blob_path(done.onnx_sha256)
    with open(blob, "r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    mv = client.get_model_version("cancer", 1)
    with pytest.raises(ArtifactCorrupted, match="corrupted"):
        load_registered_onnx(client, mv, _signature(client, "models:/cancer/1"))


def test_a_failed_conversion_that_is_not_a_disagreement_keeps_the_form(client, breast_cancer):
    X, y = breast_cancer
    _register(client, RandomForestClassifier(n_estimators=5, random_state=0), X, y)
    assert client.convert_model("cancer/1").converted
    attached = client.get_model_version("cancer", 1).tags[ONNX_TAG]

    # the converter cannot finish (here: no time to) — nothing was found wrong with the form
    from modelloop.registry._onnx import convert_version

    done = convert_version(client, "cancer/1", timeout_s=0.01)
    assert not done.converted and "took longer" in done.reason
    # check data that does not fit the signature: a refusal, not a disagreement
    strings = X.astype(str).head(20)
    done = client.convert_model("cancer/1", check_data=strings)
    assert not done.converted and "does not fit the signature" in done.reason
    assert client.get_model_version("cancer", 1).tags[ONNX_TAG] == attached
