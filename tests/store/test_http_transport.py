"""The HTTP store's connections: kept alive between calls, and a connection the server closed
while it sat idle is replaced without the caller seeing an error."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from modelloop.exceptions import NotFound
from modelloop.store._http._transport import Transport


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, close_after_each: bool) -> None:
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the server closes
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()  # no "Connection: close" even when it then closes
        self.wfile.write(data)
        self.wfile.flush()
        if self.server.close_after_each:
            self.close_connection = True

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, b""))
        if self.path.endswith("/missing"):
            self._answer(404, {"error": "NotFound", "message": "no such thing"})
        else:
            self._answer(200, {"path": self.path})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(("POST", self.path, body))
        self._answer(200, {"key": self.headers["Idempotency-Key"], "got": json.loads(body)})


@pytest.fixture(params=[False, True], ids=["kept-alive", "closed-after-each"])
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(close_after_each=request.param)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_calls_reuse_a_connection_and_survive_one_the_server_closed(server: _Server) -> None:
    t = Transport(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert t.get("/a")["path"] == "/api/v1/a"
        # at once (the connection is reused unchecked) and after a pause (checked first)
        got = t.write("POST", "/b", {"x": 1})
        time.sleep(0.7)
        assert t.get("/c", {"q": "v w"})["path"] == "/api/v1/c?q=v+w"
    finally:
        t.close()
    assert got["got"] == {"x": 1} and len(got["key"]) == 32
    # each request reached the server once: nothing was lost or sent twice
    assert [(m, p) for m, p, _ in server.requests] == [
        ("GET", "/api/v1/a"),
        ("POST", "/api/v1/b"),
        ("GET", "/api/v1/c?q=v+w"),
    ]
    assert server.connections == (3 if server.close_after_each else 1)


def test_an_error_answer_is_the_store_error_it_names(server: _Server) -> None:
    t = Transport(f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        with pytest.raises(NotFound, match="no such thing"):
            t.get("/missing")
        assert t.get("/after")["path"] == "/api/v1/after"  # the connection is still good
    finally:
        t.close()
