"""The dashboard over plain HTTP against a real ``modelloop ui`` process: bad query parameters
are named, a corrupted artifact is refused whole, and every page carries its security headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_support import UiServer, http_get, start_ui


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str, Any]]:
    from modelloop._client import Client
    from modelloop._config import Settings

    home = tmp_path_factory.mktemp("uihttp") / "home"
    client = Client(Settings(home=home))
    source = home.parent / "notes.txt"
    source.write_text("hello " * 1000)
    with client.start_run("http", name="one") as run:
        client.log_artifact(run.run_id, source, "docs/notes.txt")
        client.store.log_params(run.run_id, {"lr": 0.1})
    digest = client.list_artifacts(run.run_id)[0].digest
    yield home, run.run_id, digest, client
    client.close()


@pytest.fixture(scope="module")
def ui(store: tuple[Path, str, str, Any]) -> Iterator[UiServer]:
    tmp = store[0].parent / "server-tmp"  # the server's temporary files, to check they go
    tmp.mkdir()
    server = start_ui(store[0], env_extra={"TMPDIR": str(tmp)})
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("n=7", "n='7'"),
        ("dir=sideways", "dir='sideways'"),
        ("col=nonsense", "column 'nonsense'"),
        ("sort=metrics.", "column 'metrics.'"),
        ("filter=params.lr+~+1", "bad filter"),
        ("page=forged", "page_token"),
    ],
)
def test_bad_runs_table_parameters_are_named(ui: UiServer, query: str, named: str) -> None:
    status, _, body = http_get(f"{ui.url}/experiments/1?{query}")
    assert status == 400
    assert named.replace("'", "&#39;") in body.decode()


def test_artifact_download_is_whole_or_refused(
    ui: UiServer, store: tuple[Path, str, str, Any]
) -> None:
    home, run_id, digest, client = store
    server_tmp = home.parent / "server-tmp"
    status, headers, body = http_get(f"{ui.url}/runs/{run_id}/artifacts/docs/notes.txt")
    assert status == 200 and body == ("hello " * 1000).encode()
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''notes.txt"
    assert headers["content-type"] == "application/octet-stream"
    blob = Path(client.artifacts.blob_path(digest))
    blob.write_bytes(b"tampered" + blob.read_bytes()[8:])
    status, _, body = http_get(f"{ui.url}/runs/{run_id}/artifacts/docs/notes.txt")
    assert status == 500
    assert b"ArtifactCorrupted" in body and b"hello hello" not in body
    deadline = time.monotonic() + 10  # the copy is removed just after the response is sent
    while list(server_tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(server_tmp.iterdir()) == []  # also when verification failed


def test_pages_carry_security_headers_and_no_external_reference(
    ui: UiServer, store: tuple[Path, str, str, Any]
) -> None:
    _, run_id, _, _ = store
    for path in ("/", "/experiments/1", f"/runs/{run_id}", "/models", "/no-such-page"):
        status, headers, body = http_get(ui.url + path)
        assert status == (404 if path == "/no-such-page" else 200), path
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        html = body.decode()
        assert "http://" not in html.replace(ui.url, "") and "https://" not in html, path
