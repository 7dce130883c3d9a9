"""The server's onnxruntime path: a version's registered ONNX form is used by default and
scikit-learn never enters the process; ``--onnx`` converts at start; ``--no-onnx`` opts out."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_support import breast_cancer, register_rf, start_server

from modelloop._client import Client
from modelloop._config import Settings

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


def _sklearn_loaded(pid: int) -> bool:
    """Whether any of scikit-learn's compiled modules is mapped into the process."""
    return "/sklearn/" in Path(f"/proc/{pid}/maps").read_text()


def _served(srv, rows: int = 40) -> tuple[dict, np.ndarray]:
    """The server's answer for ``rows`` rows, after checking its labels against scikit-learn's;
    also scikit-learn's probabilities, for the caller's tolerance."""
    X, _ = breast_cancer()
    records = X.iloc[:rows].to_dict("records")
    reply = httpx.post(f"{srv.url}/v1/models/cancer/predict", json={"records": records}, timeout=30)
    assert reply.status_code == 200, reply.text
    client = Client(Settings(home=srv.home))
    try:
        model = client.load_model(f"models:/cancer/{reply.json()['model_version']}")
        expected = model.predict_proba(X.iloc[:rows])
        assert reply.json()["predictions"] == model.predict(X.iloc[:rows]).tolist()
    finally:
        client.close()
    return reply.json(), expected


def _wait_for(srv, predicate, timeout: float = 20.0) -> dict:
    """Poll ``/v1/models`` until ``predicate(champion description)`` holds; return it."""
    deadline = time.monotonic() + timeout
    while True:
        champion = httpx.get(f"{srv.url}/v1/models", timeout=10).json()["models"][0]["champion"]
        if predicate(champion):
            return champion
        assert time.monotonic() < deadline, (champion, srv.log()[-2000:])
        time.sleep(0.1)


def _onnx_flag(srv) -> bool:
    models = httpx.get(f"{srv.url}/v1/models", timeout=10).json()["models"]
    return bool(models[0]["champion"]["onnx"])


def test_registered_form_is_served_by_default_without_scikit_learn(tmp_path: Path) -> None:
    home = tmp_path / "home"
    register_rf(home)
    client = Client(Settings(home=home))
    X, _ = breast_cancer()
    assert client.convert_model("cancer@champion", check_data=X).converted
    client.close()

    srv = start_server(home, ["cancer@champion"])  # no flag
    try:
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
        assert _onnx_flag(srv)
        assert "onnxruntime path on (registered ONNX form, model sha256 " in srv.log()
        assert not _sklearn_loaded(srv.proc.pid)
        assert not list((home / "cache").glob("onnx/*"))  # nothing converted at start
    finally:
        assert srv.terminate() == 0

    srv = start_server(home, ["cancer@champion"], "--no-onnx")
    try:
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-12)
        assert not _onnx_flag(srv)
        assert _sklearn_loaded(srv.proc.pid)
    finally:
        assert srv.terminate() == 0


def test_an_alias_moving_to_a_converted_version_switches_runtime(tmp_path: Path) -> None:
    home = tmp_path / "home"
    register_rf(home)  # version 1: no ONNX form
    v2 = register_rf(home, random_state=1, alias=None)
    client = Client(Settings(home=home))
    assert client.convert_model(f"cancer/{v2}").converted
    srv = start_server(home, ["cancer@champion"], "--reload-interval", "0.2")
    try:
        assert not _onnx_flag(srv)
        client.set_alias("cancer", "champion", v2)
        champion = _wait_for(srv, lambda c: c["version"] == v2)
        assert champion["version"] == v2 and champion["onnx"] is True
        body, expected = _served(srv)
        assert body["model_version"] == v2
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
    finally:
        client.close()
        assert srv.terminate() == 0


def test_onnx_flag_converts_at_start_and_keeps_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    register_rf(home)
    srv = start_server(home, ["cancer@champion"], "--onnx")
    try:
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
        assert "onnxruntime path on" in srv.log()
        assert _onnx_flag(srv)
    finally:
        assert srv.terminate() == 0
    assert list((home / "cache" / "onnx").glob("*.onnx"))  # kept for the next start


def test_a_running_server_follows_a_form_attached_or_detached(tmp_path: Path) -> None:
    from modelloop.registry._onnx import ONNX_TAG

    home = tmp_path / "home"
    register_rf(home)
    client = Client(Settings(home=home))
    srv = start_server(home, ["cancer/1"], "--reload-interval", "0.2")  # a pinned version too
    try:
        assert _wait_for(srv, lambda c: True)["onnx"] is False
        done = client.convert_model("cancer/1")
        assert done.converted
        champion = _wait_for(srv, lambda c: c["onnx"])
        assert champion["onnx"] is True and champion["version"] == 1
        assert champion["onnx_sha256"] == done.onnx_sha256
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
        assert "with its ONNX form changed" in srv.log()

        client.store.set_model_version_tags("cancer", 1, {ONNX_TAG: ""})  # detached
        champion = _wait_for(srv, lambda c: not c["onnx"])
        assert champion["onnx"] is False and champion["onnx_sha256"] is None
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-12)
    finally:
        client.close()
        assert srv.terminate() == 0


def test_a_damaged_form_falls_back_to_scikit_learn_with_a_warning(tmp_path: Path) -> None:
    from modelloop.registry._onnx import ONNX_TAG

    home = tmp_path / "home"
    register_rf(home)
    client = Client(Settings(home=home))
    bogus = client.artifacts.put_bytes(b"not json").digest
    client.store.set_model_version_tags("cancer", 1, {ONNX_TAG: bogus})
    client.close()
    srv = start_server(home, ["cancer@champion"], "--reload-interval", "0.2")
    try:
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-12)
        assert _onnx_flag(srv) is False
        time.sleep(1.5)  # several alias checks: the same damaged form is not loaded again
        log = " ".join(srv.log().split())
        warning = "registered ONNX form not used: the ONNX form of cancer/1 has an unreadable"
        assert log.count(warning) == 1
    finally:
        assert srv.terminate() == 0


def test_with_onnx_flag_a_detached_form_is_not_converted_again(tmp_path: Path) -> None:
    from modelloop.registry._onnx import ONNX_TAG

    home = tmp_path / "home"
    register_rf(home)
    client = Client(Settings(home=home))
    srv = start_server(home, ["cancer@champion"], "--onnx", "--reload-interval", "0.2")
    try:
        assert _onnx_flag(srv)  # converted at start, since the version has no form
        assert client.convert_model("cancer/1").converted
        attached = client.get_model_version("cancer", 1).tags[ONNX_TAG]
        assert _wait_for(srv, lambda c: "registered ONNX form" in srv.log())["onnx"] is True
        client.store.set_model_version_tags("cancer", 1, {ONNX_TAG: ""})  # found to disagree
        champion = _wait_for(srv, lambda c: not c["onnx"])
        assert champion["onnx"] is False and attached
        assert "detached after a failed check" in srv.log()
        body, expected = _served(srv)
        np.testing.assert_allclose(body["probabilities"], expected, atol=1e-12)
    finally:
        client.close()
        assert srv.terminate() == 0
