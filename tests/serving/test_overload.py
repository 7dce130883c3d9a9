"""A full queue answers 503 with Retry-After at once; no request hangs; rejections are counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import (
    Server,
    post_many,
    register_rf,
    row_records,
    sample,
    scrape,
    start_server,
)

QUEUE_ROWS = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("overload") / "home"
    register_rf(home)
    srv = start_server(
        home,
        ["cancer@champion"],
        "--max-batch-rows",
        "1",
        "--max-queue-rows",
        str(QUEUE_ROWS),
        "--no-log",
        "--reload-interval",
        "0",
    )
    try:
        yield srv
    finally:
        srv.terminate()


def test_burst_beyond_the_queue_gets_503_with_retry_after_and_nothing_hangs(
    server: Server,
) -> None:
    url = f"{server.url}/v1/models/cancer/predict"
    records = row_records(20)
    # singles, and every tenth request 10 rows, so that the one-row-at-a-time model is busy
    bodies = [
        {"records": records[:10] if i % 10 == 0 else [records[i % 20]], "id": f"r{i}"}
        for i in range(300)
    ]
    before = scrape(server)
    # one connection per request; raises (fails) if any is not answered within 30 s
    responses = post_many(url, bodies, concurrency=len(bodies), timeout=30)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    rejected = [r for r in responses if r.status_code == 503]
    served = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 200]
    assert rejected, "a burst of 300 requests over a 32-row queue was never refused"
    assert served, "the server answered nothing during the burst"
    for r in rejected:
        assert int(r.headers["retry-after"]) >= 1
        body = r.json()
        assert set(body) == {"error"} and "queue" in body["error"]
    for b, r in served:
        assert r.json()["request_id"] == b["id"]
        assert len(r.json()["predictions"]) == len(b["records"])
    after = scrape(server)
    name = "modelloop_serving_rejected_requests_total"
    assert sample(after, name, model="cancer", reason="queue_full") - sample(
        before, name, model="cancer", reason="queue_full"
    ) == len(rejected)
    req = "modelloop_serving_requests_total"
    n503 = sum(v for (n, lbl), v in after.items() if n == req and ("status", "503") in lbl)
    n503 -= sum(v for (n, lbl), v in before.items() if n == req and ("status", "503") in lbl)
    assert n503 == len(rejected)
    # counted under the version and route that would have answered
    labels = {"model": "cancer", "version": "1", "route": "champion", "status": "503"}
    assert sample(after, req, **labels) - sample(before, req, **labels) == len(rejected)
    n200 = sum(v for (n, lbl), v in after.items() if n == req and ("status", "200") in lbl)
    n200 -= sum(v for (n, lbl), v in before.items() if n == req and ("status", "200") in lbl)
    assert n200 == len(served)
    # the queue drained: it is empty and the next request is answered
    assert sample(after, "modelloop_serving_queue_depth", model="cancer") == 0
    again = post_many(url, [{"records": records[:1]}])[0]
    assert again.status_code == 200


def test_request_that_can_never_fit_the_queue_is_not_told_to_retry(server: Server) -> None:
    """A request with more rows than --max-queue-rows (but within --max-rows) on an idle server:
    a 503 with Retry-After would promise that retrying helps, yet it would fail every time. It
    must be answered (taken when nothing waits) or refused for good (413)."""
    url = f"{server.url}/v1/models/cancer/predict"
    body = {"records": row_records(QUEUE_ROWS + 8)}
    for _ in range(2):  # the queue is empty both times
        resp = post_many(url, [body])[0]
        assert resp.status_code in (200, 413), (resp.status_code, resp.headers, resp.text)
