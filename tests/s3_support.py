"""A real S3-compatible server for tests: moto's server on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

BUCKET = "modelloop-test"
# Small parts, so that the 20 MB tests go through a real multipart upload.
S3_BLOCK_SIZE = 5 * 2**20
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,  # never read a developer's real profile
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1",
}


@dataclass
class S3Server:
    """A running moto server and the options that reach it."""

    endpoint_url: str

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for an ArtifactStore on this server."""
        return {
            "key": "testing",
            "secret": "testing",
            "default_block_size": S3_BLOCK_SIZE,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        }

    def client(self) -> Any:
        """A boto3 client on the server, independent of the store's s3fs instance."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("moto server did not start within 30 s")
            time.sleep(0.1)
