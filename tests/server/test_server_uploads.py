"""Every route that takes a body, against a real server: path traversal, oversized and malformed
bodies get a 4xx with a JSON error, and nothing is written outside the artifact root."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelloop.store._sql import SqlStore

LIMIT = 1 << 20  # the server under test accepts blobs up to 1 MB


@dataclass
class Srv:
    url: str
    root: Path  # the artifact root
    base: Path  # the test's folder: nothing may appear in it outside root and the database
    store_url: str

    def raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """Send ``path`` exactly as given (no client-side normalisation of ``..``)."""
        host, port = self.url.rsplit("//", 1)[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture
def srv(server_launcher: Any, tmp_path: Path) -> Iterator[Srv]:
    (tmp_path / "db").mkdir()
    store_url = f"sqlite:///{tmp_path / 'db' / 'store.db'}"
    root = tmp_path / "artifacts"
    server = server_launcher.start(store_url, root, tmp_path / "home", max_upload_bytes=LIMIT)
    try:
        yield Srv(server.url, root, tmp_path, store_url)
    finally:
        server_launcher.stop(server)


def outside_files(s: Srv) -> set[tuple[str, int]]:
    """Files under the test's folder, except the artifact root and the database folder."""
    return {
        (str(p.relative_to(s.base)), p.stat().st_size)
        for p in s.base.rglob("*")
        if p.is_file() and not p.is_relative_to(s.root) and not p.is_relative_to(s.base / "db")
    }


def blobs(s: Srv) -> list[Path]:
    return sorted(p for p in (s.root / "blobs").rglob("*") if p.is_file())


def leftovers(s: Srv) -> list[Path]:
    return sorted(p for p in (s.root / "tmp").rglob("*") if p.is_file())


def assert_json_error(status: int, body: bytes, expected: type | int) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body)
    if isinstance(expected, int):
        assert status == expected, body
    doc = json.loads(body)
    assert set(doc) == {"error", "message"} and doc["message"]
    assert "Traceback" not in doc["message"] and 'File "' not in doc["message"]
    return dict(doc)


TRAVERSALS = [
    "../../escaped.txt",
    "..%2F..%2Fescaped.txt",
    "%2e%2e%2f%2e%2e%2fescaped.txt",
    "..%5c..%5cescaped.txt",
    "a" * 64 + "/../../escaped.txt",
    "a" * 64 + "%2F..%2F..%2Fescaped.txt",
    "A" * 64,
    "a" * 63,
    "g" * 64,
    "a" * 64 + "%00",
    "%00" + "a" * 61,
    "",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_blob_names_that_are_not_a_digest_are_refused(srv: Srv, name: str) -> None:
    before = outside_files(srv)
    status, body = srv.raw(
        "PUT",
        f"/api/v1/artifacts/blobs/{name}",
        b"escaped",
        {"Content-Type": "application/octet-stream"},
    )
    assert 400 <= status < 500, (status, body)
    assert json.loads(body)["error"] in {"InvalidInput", "NotFound", "MethodNotAllowed"}
    assert outside_files(srv) == before
    assert not list(srv.base.rglob("escaped.txt")) and blobs(srv) == []
    assert leftovers(srv) == []


def test_a_body_that_is_not_what_its_name_says_is_refused(srv: Srv) -> None:
    named = hashlib.sha256(b"what the name says").hexdigest()
    status, body = srv.raw(
        "PUT", f"/api/v1/artifacts/blobs/{named}", b"something else", {"Content-Type": "x"}
    )
    doc = assert_json_error(status, body, 400)
    assert doc["error"] == "InvalidInput" and "sha256" in doc["message"]
    assert blobs(srv) == [] and leftovers(srv) == []
    r = httpx.head(f"{srv.url}/api/v1/artifacts/blobs/{named}")
    assert r.status_code == 404


def test_a_blob_over_the_limit_is_refused_declared_or_streamed(srv: Srv) -> None:
    big = b"x" * (LIMIT + 1)
    digest = hashlib.sha256(big).hexdigest()
    url = f"{srv.url}/api/v1/artifacts/blobs/{digest}"
    declared = httpx.put(url, content=big)  # with Content-Length: refused before it is read
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off once past the limit
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    try:
        streamed = httpx.put(url, content=chunks()).status_code
    except httpx.TransportError:  # the server may close before the client finished sending
        streamed = 413
    assert streamed == 413
    assert blobs(srv) == [] and leftovers(srv) == []
    exact = b"y" * LIMIT  # the limit itself is accepted
    r = httpx.put(f"{srv.url}/api/v1/artifacts/blobs/{hashlib.sha256(exact).hexdigest()}",
                  content=exact)  # fmt: skip
    assert r.status_code == 201 and r.json()["size"] == LIMIT
    assert len(blobs(srv)) == 1 and leftovers(srv) == []


def test_artifact_rows_with_hostile_paths_are_refused(srv: Srv) -> None:
    http = httpx.Client(base_url=srv.url + "/api/v1")
    exp = http.post("/experiments", json={"name": "e"}).json()
    run = http.post("/runs", json={"experiment_id": exp["experiment_id"]}).json()
    digest = hashlib.sha256(b"").hexdigest()
    before = outside_files(srv)
    for path in ["../../escaped.txt", "/etc/passwd", "ok/../../x", "ok/./x", "ok\\..\\x", ""]:
        item = {"run_id": run["run_id"], "path": path, "digest": digest, "size": 0}
        r = http.post("/runs/artifacts", json={"artifacts": [item]})
        assert_json_error(r.status_code, r.content, 400)
    assert http.get(f"/runs/{run['run_id']}/artifacts").json() == []
    assert outside_files(srv) == before
    http.close()


def _body_routes(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{url}/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                routes.append((method.upper(), path))
    return routes


FILL = {
    "name": "m", "alias": "champion", "version": "1", "run_id": "0" * 32,
    "model_name": "m", "experiment_id": "1", "dataset_id": "1", "token_id": "t",
}  # fmt: skip


def test_malformed_json_on_every_route_with_a_body_is_a_4xx(srv: Srv) -> None:
    routes = _body_routes(srv.url)
    assert ("POST", "/api/v1/runs/{run_id}/metrics") in routes and len(routes) > 20
    store = SqlStore(srv.store_url)
    for method, template in routes:
        path = template.format(**FILL)
        for body in (b"{not json", b"[]", b'{"a": ' * 2000, b"\xff\xfe", b"null"):
            status, raw = srv.raw(method, path, body, {"Content-Type": "application/json"})
            assert status in (400, 422), (method, path, body[:20], status)
            assert assert_json_error(status, raw, status)["error"] == "InvalidInput"
        status, raw = srv.raw(method, path, b"x" * 100, {"Content-Type": "text/plain"})
        assert 400 <= status < 500, (method, path, status)
    assert store.list_experiments() == [] and store.list_registered_models() == []
    assert store.list_users() == []
    store.close()
    assert blobs(srv) == []


def test_a_blob_corrupted_on_the_server_never_reaches_the_destination(
    srv: Srv, tmp_path: Path
) -> None:
    from modelloop.exceptions import ArtifactCorrupted, StoreError
    from modelloop.store._http import HttpArtifactStore, Transport

    artifacts = HttpArtifactStore(Transport(srv.url))
    data = os.urandom(LIMIT - 1)
    info = artifacts.put_bytes(data)
    assert artifacts.read_bytes(info.digest) == data and blobs(srv)[0].name == info.digest
    stored = blobs(srv)[0]
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    dest = tmp_path / "copy.bin"
    dest.write_bytes(b"before")
    with pytest.raises((ArtifactCorrupted, StoreError), match="corrupted"):
        artifacts.get_file(info.digest, dest)
    assert dest.read_bytes() == b"before" and list(tmp_path.glob(".copy.bin.*")) == []
    with pytest.raises((ArtifactCorrupted, StoreError), match="corrupted"):
        artifacts.read_bytes(info.digest)
    artifacts._t.close()


def test_json_bodies_are_bounded_and_must_declare_their_length(srv: Srv) -> None:
    from modelloop.server._app import MAX_JSON_BYTES

    path = "/api/v1/runs/" + "0" * 32 + "/metrics"
    host, port = srv.url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # Only the headers are sent: the refusal must come before the body is read.
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_JSON_BYTES + 1}\r\n\r\n".encode()
        )
        reply = b""
        while b"}" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:
        yield b'{"keys": [], '
        yield b'"values": [], "steps": [], "timestamps": []}'

    r = httpx.post(
        f"{srv.url}{path}", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 411 and r.json()["error"] == "InvalidInput"
    assert SqlStore(srv.store_url).list_experiments() == []


def test_an_upload_cut_off_mid_body_leaves_nothing_and_the_next_one_lands(
    server_launcher: Any, tmp_path: Path
) -> None:
    """Pieces of a large body are written while the next ones arrive: a client gone halfway
    leaves no blob and no temporary file, and the same blob sent whole afterwards is stored."""
    (tmp_path / "db").mkdir()
    root = tmp_path / "artifacts"
    server = server_launcher.start(
        f"sqlite:///{tmp_path / 'db' / 'store.db'}", root, tmp_path / "home",
        max_upload_bytes=64 << 20,
    )  # fmt: skip
    try:
        s = Srv(server.url, root, tmp_path, "")
        data = os.urandom(24 << 20)
        digest = hashlib.sha256(data).hexdigest()
        host, port = s.url.rsplit("//", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = (
                f"PUT /api/v1/artifacts/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(head.encode() + data[: 13 << 20])
        deadline = time.monotonic() + 30
        while leftovers(s) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(s) == [] and blobs(s) == []
        r = httpx.put(f"{s.url}/api/v1/artifacts/blobs/{digest}", content=data, timeout=60)
        assert r.status_code == 201 and r.json() == {"digest": digest, "size": len(data)}
        assert [p.read_bytes() == data for p in blobs(s)] == [True] and leftovers(s) == []
    finally:
        server_launcher.stop(server)


def test_a_write_failing_mid_upload_is_answered_and_leaves_nothing(tmp_path: Path) -> None:
    """The server may write no file beyond 8 MiB (RLIMIT_FSIZE): a 24 MiB blob fails while the
    next pieces are still arriving. The failure of the write on its thread is the answer (503
    naming it), no blob or temporary file is left, and the server goes on taking uploads."""
    import resource
    import signal

    from server_support import start_cli_server

    cap = 8 << 20

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    (tmp_path / "db").mkdir()
    root = tmp_path / "artifacts"
    env = {
        "MODELLOOP_HOME": str(tmp_path / "home"),
        "MODELLOOP_STORE_URL": f"sqlite:///{tmp_path / 'db' / 'store.db'}",
        "MODELLOOP_ARTIFACT_ROOT": str(root),
    }
    with start_cli_server(env, preexec_fn=limit_file_size) as (url, _):
        s = Srv(url, root, tmp_path, "")
        data = os.urandom(24 << 20)
        digest = hashlib.sha256(data).hexdigest()
        r = httpx.put(f"{url}/api/v1/artifacts/blobs/{digest}", content=data, timeout=60)
        doc = r.json()
        assert r.status_code == 503 and doc["error"] == "StoreError", r.text
        assert "too large" in doc["message"].lower() and "Traceback" not in doc["message"]
        assert blobs(s) == [] and leftovers(s) == []
        small = os.urandom(1 << 20)
        r = httpx.put(
            f"{url}/api/v1/artifacts/blobs/{hashlib.sha256(small).hexdigest()}", content=small
        )
        assert r.status_code == 201, r.text
        assert [p.read_bytes() == small for p in blobs(s)] == [True] and leftovers(s) == []
