"""A version an alias moves to but the server refuses to load (here: a package holding a type
nobody trusted) is visible in ``/v1/models``, readiness and ``/metrics``, while the previous
version keeps answering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serving_support import (
    Server,
    breast_cancer,
    move_alias,
    register,
    register_rf,
    row_records,
    sample,
    scrape,
    start_server,
)
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

P = "modelloop_serving_"


class AddConstant(TransformerMixin, BaseEstimator):
    """A user-defined transformer: skops can save it, but nobody has vouched for it."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def fit(self, X: Any, y: Any = None) -> AddConstant:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float) + self.value


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("refused") / "home"
    assert register_rf(home) == 1
    X, y = breast_cancer()
    X = X.iloc[:, :3]
    untrusted = make_pipeline(AddConstant(2.0), LogisticRegression()).fit(X, y)
    assert register(home, "cancer", untrusted, X.head(5), alias=None) == 2
    server = start_server(home, ["cancer@champion"], "--reload-interval", "0", "--no-log")
    try:
        yield server
    finally:
        server.terminate()


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=60)


def test_a_refused_alias_target_shows_until_the_alias_names_a_loadable_version(
    server: Server,
) -> None:
    move_alias(server.home, "cancer", 2)
    assert httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json() == {"changed": []}

    # the previous version answers
    answer = httpx.post(
        f"{server.url}/v1/models/cancer/predict", json={"records": row_records(1)}, timeout=60
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == 1
    # /v1/models: the version refused and why
    champion = get(server, "/v1/models").json()["models"][0]["champion"]
    assert champion["version"] == 1
    refused = champion["refused"]
    assert refused["version"] == 2
    assert "AddConstant" in refused["reason"] and "trusted" in refused["reason"]
    assert get(server, "/v1/models/cancer").json()["champion"]["refused"] == refused
    # readiness: still ready (version 1 answers), saying what was refused
    ready = get(server, "/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "refused": [{"model": "cancer", "route": "champion",
                                                        **refused}]}  # fmt: skip
    model_ready = get(server, "/v2/models/cancer/ready")
    assert model_ready.status_code == 200
    assert model_ready.json() == {"name": "cancer", "ready": True, "refused": {"champion": refused}}
    version_ready = get(server, "/v2/models/cancer/versions/2/ready")
    assert version_ready.status_code == 400
    assert version_ready.json()["ready"] is False
    assert version_ready.json()["refused"]["version"] == 2
    assert get(server, "/v2/models/cancer/versions/1/ready").status_code == 200
    # /metrics: the refused version, per model and route
    samples = scrape(server)
    assert sample(samples, P + "refused_version", model="cancer", route="champion") == 2
    assert sample(samples, P + "model_version", model="cancer", route="champion") == 1
    # a second reload does not try again, and still says so
    assert httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json() == {"changed": []}
    assert get(server, "/v1/models/cancer").json()["champion"]["refused"]["version"] == 2

    # the alias comes back to version 1: nothing is refused any more
    move_alias(server.home, "cancer", 1)
    assert httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json() == {"changed": []}
    assert get(server, "/v1/models/cancer").json()["champion"]["refused"] is None
    assert get(server, "/v2/health/ready").json() == {"ready": True}
    assert get(server, "/v2/models/cancer/ready").json() == {"name": "cancer", "ready": True}
    assert get(server, "/v2/models/cancer/versions/2/ready").status_code == 404
    samples = scrape(server)
    assert not [k for k in samples if k[0] == P + "refused_version"]
    # and back to version 2: refused again at once (it is not loaded a second time)
    move_alias(server.home, "cancer", 2)
    assert httpx.post(f"{server.url}/v1/admin/reload", timeout=60).json() == {"changed": []}
    assert get(server, "/v1/models/cancer").json()["champion"]["refused"] == refused
    assert sample(scrape(server), P + "refused_version", model="cancer", route="champion") == 2
    assert server.log().count("cannot load cancer version 2") == 1
