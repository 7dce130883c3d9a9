"""Feedback is checked against the request ids a real ``modelloop serve`` answered: labels for
answered ids are verified, ids the server made and never answered are refused (nothing is
recorded), and ids it cannot know (a client's own, older than the process, forgotten) are
taken and counted as unverified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from serving_support import (
    Server,
    read_parquets,
    register_rf,
    row_records,
    sample,
    scrape,
    start_server,
)

from modelloop.serving._served import ServedIds

MODEL = "cancer"
PREDICT = f"/v1/models/{MODEL}/predict"
FEEDBACK = f"/v1/models/{MODEL}/feedback"
COUNTER = "modelloop_serving_feedback_labels_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("feedback") / "home"
    register_rf(home)
    register_rf(home, "other")
    srv = start_server(home, [f"{MODEL}@champion", "other@champion"], "--no-log")
    try:
        yield srv
    finally:
        srv.terminate()


def predict(http: Any, rows: int = 1, rid: str | None = None, path: str = PREDICT) -> Any:
    body: dict[str, Any] = {"records": row_records(rows)}
    if rid is not None:
        body["id"] = rid
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def recorded(server: Server) -> list[str]:
    frame = read_parquets(server.home / "feedback" / MODEL)
    return [] if frame.empty else list(frame["request_id"])


def counted(server: Server, check: str) -> float:
    return sample(scrape(server), COUNTER, model=MODEL, check=check)


def test_labels_for_answered_requests_are_verified(http: Any, server: Server) -> None:
    made = predict(http)["request_id"]  # an id the server made
    predict(http, rid="client-1")  # the client's own id
    rows = predict(http, rows=3, rid="multi-1")["row_ids"]
    before = counted(server, "verified")
    labels = [{"request_id": rid, "label": 1} for rid in [made, "client-1", rows[0], rows[2]]]
    response = http.post(FEEDBACK, json={"labels": labels})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": MODEL, "accepted": 4, "verified": 4, "unverified": 0
    }  # fmt: skip
    assert counted(server, "verified") == before + 4
    assert {made, "client-1", rows[0], rows[2]} <= set(recorded(server))


def test_ids_the_server_cannot_know_are_taken_and_counted_unverified(
    http: Any, server: Server
) -> None:
    made = predict(http)["request_id"]
    before = counted(server, "unverified")
    labels = [{"request_id": rid, "label": 0} for rid in ["forged", "from-yesterday", made]]
    response = http.post(FEEDBACK, json={"labels": labels})
    assert response.status_code == 200, response.text
    assert response.json()["verified"] == 1 and response.json()["unverified"] == 2
    assert counted(server, "unverified") == before + 2
    assert "forged" in recorded(server)


def test_ids_the_server_made_and_never_answered_are_refused(http: Any, server: Server) -> None:
    made = predict(http)["request_id"]
    never = made[:-4] + ("0000" if not made.endswith("0000") else "1111")  # same tag, unseen
    other = predict(http, path="/v1/models/other/predict")["request_id"]  # answered, by another
    multi = predict(http, rows=2, rid="multi-2")["row_ids"]
    before = (counted(server, "refused"), len(recorded(server)))
    for bad in (never, other, "multi-2", "multi-2/2", f"{never}/0"):
        labels = [{"request_id": made, "label": 1}, {"request_id": bad, "label": 1}]
        response = http.post(FEEDBACK, json={"labels": labels})
        assert response.status_code == 422, (bad, response.text)
        error = response.json()["error"]
        assert repr(bad) in error and "never answered" in error, error
    assert counted(server, "refused") == before[0] + 10
    assert len(recorded(server)) == before[1]  # nothing of a refused request is recorded
    one = http.post(FEEDBACK, json={"request_id": multi[1], "label": 1})
    assert one.status_code == 200 and one.json()["verified"] == 1, one.text


def test_forgotten_ids_become_unverified() -> None:
    served = ServedIds(max_ids=2)
    ids = [served.new_id() for _ in range(4)]
    assert len({i[:8] for i in ids}) == 1 and all(len(i) == 32 for i in ids)
    served.record(MODEL, ids[0], 1)
    assert served.check(MODEL, [ids[1]]).never == [ids[1]]  # complete: known never answered
    served.record(MODEL, ids[1], 1)
    served.record(MODEL, ids[2], 1)  # the first is forgotten
    check = served.check(MODEL, ids)
    assert (check.verified, check.unverified, check.never) == (2, 2, [])
    served.record(MODEL, ids[1], 1)  # used again: newest, kept over ids[2]
    served.record(MODEL, ids[3], 1)
    check = served.check(MODEL, ids[1:])
    assert (check.verified, check.unverified) == (2, 1)
