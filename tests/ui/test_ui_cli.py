"""``modelloop ui`` binds to loopback only: it has no login."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelloop.cli._ui import check_loopback
from modelloop.exceptions import InvalidInput


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", ""])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidInput, match="loopback"):
        check_loopback(host)


@pytest.mark.parametrize(
    ("host", "bound"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("localhost", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
    ],
)
def test_loopback_hosts_are_accepted(host: str, bound: str) -> None:
    assert check_loopback(host) == bound


def test_the_command_refuses_a_public_host_with_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "MODELLOOP_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "modelloop", "ui", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "0.0.0.0 is not a loopback address" in out.stderr
    assert not (tmp_path / "home").exists()  # refused before opening any store
