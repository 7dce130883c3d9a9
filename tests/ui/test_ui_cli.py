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


@pytest.mark.parametrize("hidden", ["starlette", "jinja2", "plotly"])
def test_a_missing_ui_extra_is_named_with_the_install_command(
    home: Path, monkeypatch: pytest.MonkeyPatch, hidden: str
) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from modelloop.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a)
    )
    result = CliRunner().invoke(app, ["ui", "--port", "0"])
    assert result.exit_code == 2
    assert "pip install 'modelloop[ui]'" in " ".join(result.output.split())
    assert hidden in result.output
