"""A moto S3 server that a test can stop and start again on the same port (an outage of the
log root), and the environment that points modelloop's shared log root at it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from s3_support import DUMMY_AWS_ENV, S3Server, free_port, wait_until_up

LOG_BUCKET = "modelloop-logs"


class RestartableS3:
    """moto's server on a fixed loopback port; :meth:`stop` and :meth:`start` an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, bucket: str = LOG_BUCKET) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(self.endpoint_url, self.proc)
        self.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> Any:
        return S3Server(self.endpoint_url).client()

    def objects(self, bucket: str = LOG_BUCKET) -> dict[str, bytes]:
        """Every object in ``bucket`` by key."""
        client = self.client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                out[item["Key"]] = body.read()
        return out

    def put_objects(self, objects: dict[str, bytes], bucket: str = LOG_BUCKET) -> None:
        client = self.client()
        for key, data in objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=data)

    def env(self, prefix: str = "logs") -> dict[str, str]:
        """The environment of a process whose log root is ``s3://LOG_BUCKET/prefix`` here."""
        return {
            **DUMMY_AWS_ENV,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MODELLOOP_LOG_ROOT": f"s3://{LOG_BUCKET}/{prefix}",
        }
