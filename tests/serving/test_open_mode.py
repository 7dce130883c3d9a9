"""A real ``modelloop serve`` process without tokens keeps web pages out: only loopback ``Host``
names are answered (DNS rebinding), state-changing requests a browser marks as cross-origin are
refused, and the routes that change state need a JSON content type. Clients that send no
Origin (curl, SDKs, tritonclient) work as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import Server, assert_error, register_rf, row_records, start_server

MODEL = "cancer"
FEEDBACK = f"/v1/models/{MODEL}/feedback"
PREDICT = f"/v1/models/{MODEL}/predict"
ROUTING = f"/v1/admin/models/{MODEL}/routing"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("open") / "home"
    register_rf(home)
    srv = start_server(home, [f"{MODEL}@champion"], "--no-log")
    try:
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def served_id(http: Any) -> str:
    """The request id of one answered prediction (feedback for it is verified)."""
    response = http.post(PREDICT, json={"id": "open-1", "records": row_records(1)})
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def test_the_reported_forged_feedback_is_assert_error(http: Any, server: Server) -> None:
    # curl -H 'Host: attacker.example' -H 'Origin: http://attacker.example' -H 'Content-Type:'
    response = http.post(
        FEEDBACK,
        content=b'{"request_id":"forged","label":1}',
        headers={"Host": "attacker.example", "Origin": "http://attacker.example"},
    )
    assert_error(response, 403, "attacker.example", "loopback")
    assert not (server.home / "feedback").exists()  # nothing was recorded


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:{port}", "localhost.attacker.example",
             "127.0.0.1.nip.io:{port}", "10.0.0.1:{port}", "0.0.0.0:{port}", "[::2]:{port}"],
)  # fmt: skip
def test_a_name_that_is_not_loopback_is_403_on_every_route(
    http: Any, server: Server, host: str
) -> None:
    host = host.format(port=server.port)
    assert_error(http.get("/v1/models", headers={"Host": host}), 403, "Host", "loopback")
    assert_error(http.get("/metrics", headers={"Host": host}), 403, "Host")
    response = http.post(PREDICT, json={"records": row_records(1)}, headers={"Host": host})
    assert_error(response, 403, "Host")


@pytest.mark.parametrize(
    "host", ["localhost:{port}", "LOCALHOST", "localhost.:{port}", "127.0.0.1:{port}",
             "127.1.2.3:{port}", "[::1]:{port}", "[::ffff:127.0.0.1]:{port}"],
)  # fmt: skip
def test_loopback_names_with_any_port_are_answered(http: Any, server: Server, host: str) -> None:
    host = host.format(port=server.port)
    response = http.get("/v1/models", headers={"Host": host})
    assert response.status_code == 200, (host, response.text)
    response = http.post(PREDICT, json={"records": row_records(1)}, headers={"Host": host})
    assert response.status_code == 200, (host, response.text)


@pytest.mark.parametrize(
    "origin", ["http://attacker.example", "http://localhost:1", "http://127.0.0.1:{other}",
               "https://127.0.0.1:{port}.attacker.example", "null", "not a url"],
)  # fmt: skip
def test_cross_origin_changes_are_403(
    http: Any, server: Server, served_id: str, origin: str
) -> None:
    origin = origin.format(port=server.port, other=server.port + 1)
    headers = {**JSON, "Origin": origin}
    label = {"request_id": served_id, "label": 1}
    assert_error(http.post(FEEDBACK, json=label, headers=headers), 403, "Origin")
    assert_error(
        http.post(PREDICT, json={"records": row_records(1)}, headers=headers), 403, "Origin"
    )
    assert_error(http.post("/v1/admin/reload", headers=headers), 403, "Origin")
    response = http.put(ROUTING, json={"mode": "off"}, headers=headers)
    assert_error(response, 403, "Origin")
    # Reading stays open: without CORS headers a browser does not show the answer to the page.
    assert http.get("/v1/models", headers={"Origin": origin}).status_code == 200


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_sec_fetch_site_from_elsewhere_is_403(http: Any, served_id: str, site: str) -> None:
    label = {"request_id": served_id, "label": 1}
    response = http.post(FEEDBACK, json=label, headers={"Sec-Fetch-Site": site})
    assert_error(response, 403, "Sec-Fetch-Site")


def test_own_pages_and_clients_without_origin_may_change_state(
    http: Any, server: Server, served_id: str
) -> None:
    label = {"request_id": served_id, "label": 1}
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    response = http.post(FEEDBACK, json=label, headers=own)
    assert response.status_code == 200, response.text
    as_localhost = {"Host": f"localhost:{server.port}", "Origin": f"http://localhost:{server.port}"}
    response = http.post(FEEDBACK, json=label, headers=as_localhost)
    assert response.status_code == 200, response.text
    assert http.post("/v1/admin/reload").status_code == 200  # curl-like: no Origin
    assert http.put(ROUTING, json={"mode": "off"}).status_code == 200


@pytest.mark.parametrize("path", [FEEDBACK, ROUTING])
@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_state_changing_routes_need_a_json_content_type(
    http: Any, path: str, ctype: str | None
) -> None:
    body = b'{"request_id": "x", "label": 1}' if path == FEEDBACK else b'{"mode": "off"}'
    headers = {} if ctype is None else {"Content-Type": ctype}
    method = "POST" if path == FEEDBACK else "PUT"
    assert_error(http.request(method, path, content=body, headers=headers), 415, "application/json")


def test_prediction_without_content_type_still_works(http: Any) -> None:
    import json

    body = json.dumps({"records": row_records(1)}).encode()
    response = http.post(PREDICT, content=body)  # curl --data-binary, tritonclient: no type
    assert response.status_code == 200, response.text


def test_a_token_server_takes_other_hosts_and_origins(tmp_path: Path) -> None:
    """With tokens a page cannot act (it has no token), so nothing more is refused."""
    import httpx

    token = "open-mode-token-0123456789"
    register_rf(tmp_path / "home")
    auth = {"Authorization": f"Bearer {token}"}
    srv = start_server(tmp_path / "home", [f"{MODEL}@champion"], "--no-log", "--token", token,
                       headers=auth)  # fmt: skip
    try:
        headers = {**auth, "Host": "serving.example", "Origin": "http://elsewhere.example"}
        response = httpx.post(
            f"{srv.url}{PREDICT}", json={"records": row_records(1)}, headers=headers, timeout=60
        )
        assert response.status_code == 200, response.text
    finally:
        srv.terminate()
