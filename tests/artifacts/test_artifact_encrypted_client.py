"""A whole client flow with encryption on: log a model, register it, load it back, on local files
and on S3, with the key given as settings read from the environment."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelloop import Client, Settings
from modelloop.artifacts import ArtifactStore, EncryptionKey, key_status
from modelloop.exceptions import EncryptionKeyError
from s3_support import BUCKET


@pytest.fixture(params=["local", "s3"])
def artifact_root(request: pytest.FixtureRequest, home: Path, monkeypatch) -> str:
    if request.param == "local":
        return str(home / "artifacts")
    s3 = request.getfixturevalue("s3_server")
    root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    monkeypatch.setenv("MODELLOOP_ARTIFACT_ROOT", root)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    return root


def test_log_register_and_load_a_model_with_encryption_on(
    artifact_root: str, home: Path, tmp_path: Path, monkeypatch, breast_cancer
) -> None:
    key = EncryptionKey.generate()
    key_file = tmp_path / "artifacts.key"
    key_file.write_text(key.to_text())
    monkeypatch.setenv("MODELLOOP_ENCRYPTION_KEY_FILE", str(key_file))
    X, y = breast_cancer
    model = LogisticRegression(max_iter=5000).fit(X, y)

    client = Client(Settings.from_env())
    with client.start_run("encrypted") as run:
        run.log_metric("acc", float(model.score(X, y)))
        run.log_model(model, "model", input_example=X.head(3))
    version = client.register_model(run.run_id, "cancer")
    client.set_alias("cancer", "champion", version.version)
    loaded = client.load_model("models:/cancer@champion")
    plain_copy = client.download_artifacts(run.run_id, "model", tmp_path / "download")
    items = client.list_artifacts(run.run_id)
    client.close()

    assert np.array_equal(loaded.predict(X), model.predict(X))
    # every blob of the run is ciphertext under the key; no plaintext file shows through
    store = ArtifactStore(artifact_root, keyring=client.artifacts.keyring)
    status = key_status(store)
    assert status.blobs == len({i.digest for i in items}) >= 3
    assert status.by_key == {key.key_id: status.blobs} and status.plaintext == 0
    stored = {i.digest: _raw(store, i.digest) for i in items}
    for item in items:
        content = (plain_copy.parent / item.path).read_bytes()
        window = content[len(content) // 2 : len(content) // 2 + 32]
        assert all(window not in raw for raw in stored.values()), item.path
        assert store.read_bytes(item.digest) == content

    # a client without the key, or with another key, is refused by name. (Each gets a home of its
    # own: the model cache of a home holds the packages it loaded, decrypted.)
    def other_client(name: str) -> Client:
        return Client(
            Settings.from_env(
                home=tmp_path / name,
                store_url=f"sqlite:///{home / 'modelloop.db'}",
                artifact_root=artifact_root,
            )
        )

    monkeypatch.delenv("MODELLOOP_ENCRYPTION_KEY_FILE")
    without = other_client("without")
    with pytest.raises(EncryptionKeyError, match="no encryption key is configured"):
        without.load_model("models:/cancer@champion")
    without.close()
    monkeypatch.setenv("MODELLOOP_ENCRYPTION_KEY", EncryptionKey.generate().to_text())
    wrong = other_client("wrong")
    with pytest.raises(EncryptionKeyError, match=f"key id {key.key_id}"):
        wrong.load_model("models:/cancer@champion")
    wrong.close()


def _raw(store: ArtifactStore, digest: str) -> bytes:
    path = store.blob_path(digest)
    if store.root.startswith("s3://"):
        from fsspec.core import url_to_fs

        fs, key = url_to_fs(path)
        return bytes(fs.cat_file(key))
    return Path(path).read_bytes()
