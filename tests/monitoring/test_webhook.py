"""The webhook notifier against real HTTP servers on 127.0.0.1: flaky, hanging and down."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    AlertEvent,
    AlertManager,
    FeatureDrifted,
    WebhookNotifier,
)


class Hook:
    """A real HTTP server: answers 500 to the first `failures` requests, can hang until released."""

    def __init__(self, failures: int = 0, hang: bool = False, fail_code: int = 500) -> None:
        self.failures = failures
        self.fail_code = fail_code
        self.hang = hang
        self.bodies: list[dict] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.bodies.append(body)
                hook.entered.set()
                if hook.hang:
                    hook.release.wait(10)
                code = hook.fail_code if len(hook.bodies) <= hook.failures else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    made: list[Hook] = []
    yield made
    for h in made:
        h.stop()


def _event(i: int = 0) -> AlertEvent:
    return AlertEvent("flights", f"rule_{i}", "firing", 0.5, "drifted", 1000 + i)


def test_delivers_json_after_retrying_server_errors(hooks: list[Hook], make_result) -> None:  # type: ignore[no-untyped-def]
    hook = Hook(failures=2)
    hooks.append(hook)
    n = WebhookNotifier(hook.url, max_retries=3, backoff=0.01)
    mgr = AlertManager([FeatureDrifted("a")], notifiers=[n])
    events = mgr.evaluate(make_result({"a"}, 0.9, ts=1))
    assert n.flush(10)
    assert (n.sent, n.failed, n.attempts) == (1, 0, 3)
    assert hook.bodies == [events[0].to_dict()] * 3
    n.close()


def test_down_server_retries_are_bounded_and_monitoring_goes_on(make_result) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = WebhookNotifier(f"http://127.0.0.1:{port}/x", max_retries=2, backoff=0.01, timeout=1)
    mgr = AlertManager([FeatureDrifted("a")], notifiers=[n])
    first = mgr.evaluate(make_result({"a"}, 0.9, ts=1))
    second = mgr.evaluate(make_result(set(), 0.9, ts=2))
    assert [e.status for e in first + second] == ["firing", "resolved"]
    assert mgr.firing() == []  # state moved on although nothing was delivered
    assert n.flush(10)
    assert (n.sent, n.failed, n.attempts) == (0, 2, 2 * 3)
    n.close()


def test_notify_returns_while_delivery_is_still_in_flight(hooks: list[Hook], make_result) -> None:  # type: ignore[no-untyped-def]
    hook = Hook(hang=True)
    hooks.append(hook)
    n = WebhookNotifier(hook.url, timeout=10, queue_size=1)
    mgr = AlertManager([FeatureDrifted("a")], notifiers=[n])
    events = mgr.evaluate(make_result({"a"}, 0.9, ts=1))  # returns although the server hangs
    assert len(events) == 1
    assert hook.entered.wait(10)  # the POST reached the server and is held there
    assert n.sent == 0 and not hook.release.is_set()
    # the queue holds one more event; further events are dropped, never waited for
    for i in range(4):
        n.notify(_event(i))
    assert n.dropped == 3
    hook.release.set()
    assert n.flush(10)
    assert (n.sent, n.failed) == (2, 0)
    n.close()
    with pytest.raises(InvalidInput, match="closed"):
        n.notify(_event())


def test_bad_urls_are_refused() -> None:
    for url in ("ftp://host/x", "file:///etc/passwd", "not a url"):
        with pytest.raises(InvalidInput, match="webhook url"):
            WebhookNotifier(url)


def test_client_errors_are_not_retried(hooks: list[Hook]) -> None:
    hook = Hook(failures=100, fail_code=404)
    hooks.append(hook)
    n = WebhookNotifier(hook.url, max_retries=3, backoff=0.01)
    n.notify(_event())
    assert n.flush(10)
    assert (n.sent, n.failed, n.attempts) == (0, 1, 1) and len(hook.bodies) == 1
    n.close()
