"""Dashboard sessions under a real ``modelloop server``: the Secure flag over TLS, a session that
dies with its token, a login that never redirects off the site, and open mode (no users)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import httpx
import pytest
from ui_auth_support import csrf_in

from server_support import start_cli_server

pytest.importorskip("fastapi")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _env(tmp_path: Path) -> tuple[dict[str, str], str]:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {
        "MODELLOOP_HOME": str(tmp_path / "home"),
        "MODELLOOP_STORE_URL": store_url,
        "MODELLOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    return env, store_url


def _login(http: httpx.Client, token: str, target: str = "/ui/models") -> httpx.Response:
    form = http.get("/ui/login")
    assert form.status_code == 200
    return http.post("/ui/login", data={"csrf": csrf_in(form.text), "token": token, "next": target})


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    from modelloop.store._sql import SqlStore

    env, store_url = _env(tmp_path)
    store = SqlStore(store_url)
    store.create_user("root", "admin", actor="operator")
    token = store.create_token("root", "tls", actor="operator")[1]
    store.close()
    cert, key = _self_signed(tmp_path)
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with (
        start_cli_server(env, *args, scheme="https") as (url, _proc),
        httpx.Client(base_url=url, verify=False, timeout=30) as http,
    ):
        done = _login(http, token)
        assert done.status_code == 303
        cookies = [v for k, v in done.headers.multi_items() if k == "set-cookie"]
        session = next(c for c in cookies if c.startswith("modelloop_session="))
        flags = {part.strip().lower() for part in session.split(";")}
        assert {"secure", "httponly", "samesite=strict", "path=/ui"} <= flags
        assert http.get("/ui/models").status_code == 200


def test_a_session_ends_with_its_token_and_login_stays_on_the_site(tmp_path: Path) -> None:
    from modelloop.access import parse_token
    from modelloop.store._sql import SqlStore

    env, store_url = _env(tmp_path)
    store = SqlStore(store_url)
    store.create_user("vic", "viewer", actor="operator")
    token = store.create_token("vic", "to revoke", actor="operator")[1]
    store.close()
    with (
        start_cli_server(env) as (url, _proc),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        # a login asked to go elsewhere lands on the dashboard's home
        done = _login(http, token, target="//evil.test/x")
        assert done.headers["location"] == "/ui/"
        assert http.get("/ui/models").status_code == 200
        parsed = parse_token(token)
        assert parsed is not None
        store = SqlStore(store_url)
        store.revoke_token(parsed.token_id, actor="operator")
        store.close()
        gone = http.get("/ui/models")
        assert gone.status_code == 303
        assert "/ui/login" in gone.headers["location"]


def test_without_users_the_dashboard_is_open_on_loopback_only(tmp_path: Path) -> None:
    env, _ = _env(tmp_path)
    with (
        start_cli_server(env) as (url, _proc),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        page = http.get("/ui/models")
        assert page.status_code == 200
        assert 'id="logout"' not in page.text
        assert http.get("/ui/models", headers={"Host": "evil.test"}).status_code == 403
        assert http.post("/ui/logout", data={}).status_code == 403  # no CSRF token
