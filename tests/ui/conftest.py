"""Fixtures of the dashboard tests: one filled store and one ``modelloop ui`` process per
module, one Chromium per module, and a fresh watched page per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_support import (
    Filled,
    UiServer,
    Watched,
    chromium_missing,
    fill_store,
    launch_browser,
    start_ui,
    watch,
)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return fill_store(tmp_path_factory.mktemp("uistore") / "home")


@pytest.fixture(scope="module")
def ui(filled: Filled) -> Iterator[UiServer]:
    server = start_ui(filled.home)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    yield from launch_browser()


@pytest.fixture
def watched(browser: Any, tmp_path: Path) -> Iterator[Watched]:
    """A page in a fresh context; the test fails if anything went wrong on it that the test
    did not expect (``watched.failed_requests.clear()`` after checking an expected one)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    w = watch(page, shots)
    try:
        yield w
    finally:
        context.close()
    assert w.problems() == []
