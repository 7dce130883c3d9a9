"""``modelloop server`` as users start it: HTTPS with a certificate made in the test (verified by
the client by default), the refusal of an open non-loopback bind, and the upload limit flag."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modelloop import Client, Settings
from modelloop.exceptions import StoreError, Unauthorized
from modelloop.store._sql import SqlStore
from s3_support import free_port
from server_support import start_cli_server


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelloop test server")])
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
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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


def test_https_is_verified_by_default_and_a_ca_bundle_makes_it_pass(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    env = {
        "MODELLOOP_HOME": str(tmp_path / "server-home"),
        "MODELLOOP_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
    }
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--max-upload-mb", "1")
    with start_cli_server(env, *args, scheme="https") as (url, _proc):
        untrusted = Client(Settings(home=tmp_path / "c1", store_url=url))
        with pytest.raises(StoreError, match=r"TLS certificate.*MODELLOOP_CA_BUNDLE"):
            untrusted.store.list_experiments()
        untrusted.close()

        trusted = Client(Settings(home=tmp_path / "c2", store_url=url, ca_bundle=str(cert)))
        with trusted.start_run("tls") as run:
            run.log_metric("auc", 0.9)
        assert trusted.get_run(run.run_id).metrics == {"auc": 0.9}
        small = tmp_path / "small.bin"
        small.write_bytes(os.urandom(1000))
        trusted.log_artifact(run.run_id, small)
        assert trusted.artifacts.read_bytes(hashlib.sha256(small.read_bytes()).hexdigest()) == (
            small.read_bytes()
        )
        trusted.close()

        big = b"z" * ((1 << 20) + 1)  # --max-upload-mb 1
        r = httpx.put(
            f"{url}/api/v1/artifacts/blobs/{hashlib.sha256(big).hexdigest()}",
            content=big,
            verify=ssl.create_default_context(cafile=str(cert)),
        )
        assert r.status_code == 413
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port does not work
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5).raise_for_status()


def test_an_open_store_is_never_served_beyond_loopback(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "MODELLOOP_HOME": str(tmp_path / "h"), "MODELLOOP_STORE_URL": store_url}
    port = str(free_port())
    cmd = [sys.executable, "-m", "modelloop", "server", "--host", "0.0.0.0", "--port", port]
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0" in refused.stderr and "users add" in refused.stderr

    store = SqlStore(store_url)  # an operator creates the first admin on the database
    store.create_user("root", "admin", actor="operator")
    token = store.create_token("root", "ops", actor="operator")[1]
    store.close()
    with start_cli_server(
        {"MODELLOOP_HOME": str(tmp_path / "h"), "MODELLOOP_STORE_URL": store_url},
        "--host",
        "0.0.0.0",
    ) as (url, _proc):
        anonymous = Client(Settings(home=tmp_path / "c", store_url=url))
        with pytest.raises(Unauthorized):
            anonymous.store.list_experiments()
        anonymous.close()
        root = Client(Settings(home=tmp_path / "c", store_url=url, token=token))
        with root.start_run("team") as run:
            pass
        assert root.get_run(run.run_id).user == "root"  # the token's user, not MODELLOOP_USER
        root.close()


def test_a_server_with_a_key_encrypts_what_clients_upload(tmp_path: Path) -> None:
    """The key lives with the server only: clients upload plaintext over HTTP, the blobs on the
    server's disk are ciphertext, and downloads through the server come back as uploaded."""
    import base64

    from modelloop.artifacts._crypto import MAGIC

    root = tmp_path / "server-artifacts"
    env = {
        "MODELLOOP_HOME": str(tmp_path / "server-home"),
        "MODELLOOP_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "MODELLOOP_ARTIFACT_ROOT": str(root),
        "MODELLOOP_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    secret = b"plaintext that must not reach the server's disk " * 2000
    with start_cli_server(env) as (url, _proc):
        client = Client(Settings(home=tmp_path / "client-home", store_url=url))
        with client.start_run("encrypted") as run:
            pass
        source = tmp_path / "secret.bin"
        source.write_bytes(secret)
        client.log_artifact(run.run_id, source)
        digest = hashlib.sha256(secret).hexdigest()
        assert client.artifacts.read_bytes(digest) == secret
        client.close()
    stored = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [digest]
    on_disk = stored[0].read_bytes()
    assert on_disk.startswith(MAGIC) and secret[:64] not in on_disk
