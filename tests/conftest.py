"""Fixtures shared by every test package: a temporary MODELLOOP_HOME and real databases.

PostgreSQL tests use the server at ``MODELLOOP_TEST_PG_URL`` (default: the trust-auth server on
127.0.0.1:5432, database ``test``); each test gets a fresh database created and dropped for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_support import BUCKET, DUMMY_AWS_ENV, S3Server, free_port, wait_until_up


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with one bucket, and dummy AWS credentials in the env."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_AWS_ENV.items():
            mp.setenv(name, value)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = S3Server(f"http://127.0.0.1:{port}")
        try:
            wait_until_up(server.endpoint_url, proc)
            server.client().create_bucket(Bucket=BUCKET)
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=10)


PG_ADMIN_URL = os.environ.get(
    "MODELLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _pg_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = [f"host={u.host or '127.0.0.1'}", f"port={u.port or 5432}", f"dbname={u.database}"]
    if u.username:
        parts.append(f"user={u.username}")
    if u.password:
        parts.append(f"password={u.password}")
    return " ".join(parts)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MODELLOOP_HOME for the test, with store and artifact variables cleared."""
    h = tmp_path / "mlhome"
    monkeypatch.setenv("MODELLOOP_HOME", str(h))
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT", "MODELLOOP_TRUSTED_TYPES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELLOOP_USER", "tester")
    return h


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a brand-new PostgreSQL database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.engine import make_url

    name = f"mlt_{uuid.uuid4().hex[:12]}"
    admin = _pg_conninfo(PG_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Parametrises a test over every store backend: a SQLite file and a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def client(home: Path) -> Iterator[object]:
    """A client on the embedded default (SQLite file + local artifacts) in a fresh home."""
    from modelloop import Client, Settings

    c = Client(Settings.from_env())
    yield c
    c.close()


@pytest.fixture
def any_client(home: Path, store_url: str) -> Iterator[object]:
    """A client parametrised over every store backend, with local artifacts in a fresh home."""
    from modelloop import Client, Settings

    c = Client(Settings.from_env(store_url=store_url))
    yield c
    c.close()


@pytest.fixture(scope="session")
def server_launcher() -> Iterator[object]:
    """Forks a real modelloop server per test (``server_support.Launcher``)."""
    pytest.importorskip("fastapi")
    from server_support import Launcher

    launcher = Launcher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def breast_cancer():
    """scikit-learn's bundled breast cancer data as (X frame, y series)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    return data.data, data.target
