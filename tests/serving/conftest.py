"""Fixtures of the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[Any]:
    """An httpx client on the module's ``server`` fixture (a real server process)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
