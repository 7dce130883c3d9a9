"""Helpers for serving tests: registering small models and running ``modelloop serve`` as a
real process on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from s3_support import free_port

FEATURES_MIXED = ("amount", "count", "flag", "city")


def breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


def register(
    home: Path,
    name: str,
    model: Any,
    example: pd.DataFrame,
    *,
    alias: str | None = "champion",
    signature: Any = None,
) -> int:
    """Log a fitted ``model`` with its input example (and ``signature``, else the inferred
    one), register it as ``name`` (and set ``alias``); return the version."""
    from modelloop._client import Client
    from modelloop._config import Settings

    client = Client(Settings(home=home))
    try:
        with client.start_run(experiment="serving-tests") as run:
            client.log_model(run.run_id, model, "model", input_example=example, signature=signature)
        mv = client.register_model(run.run_id, name)
        if alias:
            client.set_alias(name, alias, mv.version)
        return mv.version
    finally:
        client.close()


def move_alias(home: Path, name: str, version: int, alias: str = "champion") -> None:
    """Point ``name@alias`` at ``version``."""
    from modelloop._client import Client
    from modelloop._config import Settings

    client = Client(Settings(home=home))
    try:
        client.set_alias(name, alias, version)
    finally:
        client.close()


def load_package(home: Path, uri: str) -> Any:
    """The model package at ``uri`` (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``)."""
    from modelloop._client import Client
    from modelloop._config import Settings

    client = Client(Settings(home=home))
    try:
        return client.load_model(uri)
    finally:
        client.close()


def register_rf(
    home: Path,
    name: str = "cancer",
    *,
    n_estimators: int = 10,
    random_state: int = 0,
    alias: str | None = "champion",
) -> int:
    """Train a small random forest on breast cancer and register it; return its version."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = breast_cancer()
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=random_state).fit(X, y)
    return register(home, name, model, X.head(20), alias=alias)


def mixed_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """float, int, bool and string columns with a label that depends on all of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(100, 30, n),
            "count": rng.integers(0, 20, n).astype("int64"),
            "flag": rng.random(n) < 0.3,
            "city": rng.choice(["paris", "lyon", "nice"], n),
        }
    )
    frame["city"] = frame["city"].astype("string")
    y = ((frame["amount"] > 100) ^ frame["flag"] ^ (frame["city"] == "lyon")).astype(int)
    return frame, y


def register_mixed(home: Path, name: str = "mixed") -> int:
    """A Pipeline over float, int, bool and string inputs, registered as NAME@champion."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X, y = mixed_frame()
    encode = ColumnTransformer(
        [
            ("num", "passthrough", ["amount", "count", "flag"]),
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["city"]),
        ]
    )
    model = Pipeline(
        [("encode", encode), ("clf", HistGradientBoostingClassifier(max_iter=20, random_state=0))]
    ).fit(X, y)
    return register(home, name, model, X.head(20))


@dataclass
class Server:
    """A ``modelloop serve`` process; ``url`` is its base address."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    home: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_server(
    home: Path,
    models: Sequence[str],
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    wait_ready: bool = True,
    headers: dict[str, str] | None = None,
) -> Server:
    """Start ``modelloop serve MODELS ARGS`` on a free port and wait until it is ready."""
    port = free_port()
    log_path = home / f"server-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "MODELLOOP_HOME": str(home),
        **(env or {}),
    }
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        if var not in (env or {}):
            full_env.pop(var, None)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelloop", "serve", *models, "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", port, home, log_path)
    if wait_ready:
        wait_until_ready(server, ready_timeout, headers=headers)
    return server


def wait_until_ready(
    server: Server, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        req = urllib.request.Request(f"{server.url}/v2/health/ready", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    server.proc.kill()
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()}")


def row_records(n: int = 1, start: int = 0) -> list[dict[str, Any]]:
    X, _ = breast_cancer()
    return X.iloc[start : start + n].to_dict(orient="records")


class Reply(NamedTuple):
    """A response as read by :func:`post_many`; header names in lower case."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


def post_many(
    url: str | Sequence[str],
    bodies: Sequence[Any],
    concurrency: int = 32,
    timeout: float = 60.0,
) -> list[Reply]:
    """POST JSON ``bodies`` over ``concurrency`` keep-alive connections; replies in order.

    A minimal HTTP/1.1 client: httpx's async pool spends milliseconds of CPU per request when
    many wait, which on two cores starves the server under test. A reply not received within
    ``timeout`` raises TimeoutError.
    """
    urls = [url] * len(bodies) if isinstance(url, str) else list(url)
    out: list[Any] = [None] * len(bodies)

    async def send(conn: Any, target: Any, body: Any) -> Reply:
        reader, writer = conn
        data = json.dumps(body).encode()
        writer.write(
            f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)
        }
        content = await reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(int(head[0].split()[1]), headers, content)

    async def run() -> None:
        todo = iter(range(len(bodies)))

        async def worker() -> None:
            conn = None
            for i in todo:
                target = urlsplit(urls[i])
                if conn is None:
                    conn = await asyncio.open_connection(target.hostname, target.port)
                out[i] = await asyncio.wait_for(send(conn, target, bodies[i]), timeout)
                if out[i].headers.get("connection", "").lower() == "close":
                    conn[1].close()
                    conn = None
            if conn is not None:
                conn[1].close()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))

    asyncio.run(run())
    return out


def assert_error(response: Any, status: int, *words: str) -> str:
    """Check that ``response`` is ``status`` with a JSON ``{"error": message}`` body naming
    each of ``words``; return the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], (word, body["error"])
    return str(body["error"])


def metric_samples(server: Server) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the server's ``/metrics``, as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=60) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The server's metrics by (name, labels)."""
    return {(n, frozenset(lab.items())): v for n, lab, v in metric_samples(server)}


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sample called ``name`` with exactly ``labels`` in a :func:`scrape`, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def read_parquets(folder: Path) -> pd.DataFrame:
    """Every Parquet file in ``folder`` (a prediction log or feedback folder) as one frame."""
    parts = [pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
