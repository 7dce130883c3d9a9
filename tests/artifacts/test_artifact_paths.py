"""validate_artifact_path: hostile paths are refused, and nothing ever lands outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelloop.artifacts import validate_artifact_path
from modelloop.exceptions import InvalidInput

HOSTILE = [
    # parent traversal, plain and hidden behind normalisation
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "a/./../..",
    "./../x",
    "a/b/../../../x",
    # percent-encoded traversal, single and double encoded
    "%2e%2e/x",
    "%2E%2E/x",
    "%252e%252e/x",
    "..%2fx",
    "..%2Fx",
    "..%5cx",
    "a%00b",
    "%2fetc/passwd",
    # backslashes, absolute, drive and UNC paths
    "..\\x",
    "a\\b",
    "/etc/passwd",
    "//server/share",
    "\\\\server\\share",
    "C:\\x",
    "c:/x",
    "C:x",
    "file:///etc/passwd",
    "s3://bucket/key",
    # control and invisible characters
    "a\x00b",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x1bb",
    "a\x7fb",
    "a\x85b",
    "a\u200bb",  # zero-width space
    "a\u202eb",  # right-to-left override
    "a\ufeffb",  # byte-order mark
    "a\u2028b",  # line separator
    "a\ud800b",  # lone surrogate
    # URL syntax and shell expansion
    "a#b",
    "a?b",
    "~/x",
    "~root/.ssh/id_rsa",
    "a:b",  # NTFS alternate data stream
    "a*b",
    "a|b",
    "a<b>",
    # lookalike dots and slashes
    "\uff0e\uff0e/x",  # fullwidth full stops
    "\u2024\u2024/x",  # one-dot leaders
    "\u2025/x",  # two-dot leader
    "a\u2215b",  # division slash
    "a\u2044b",  # fraction slash
    "a\uff0fb",  # fullwidth solidus
    "a\u29f8b",  # big solidus
    # empty and degenerate segments
    "",
    ".",
    "./.",
    "a//b",
    "a/",
    "/",
    # names Windows trims to something else
    "...",
    ".. /x",
    "a/.. ",
    "a/b.",
    " a",
    # too long
    "x" * 1025,
    "a/" + "b" * 256,
    "é" * 128 + "/" + "é" * 128,  # 256 UTF-8 bytes in each segment
]

VALID = [
    ("model/model.skops", "model/model.skops"),
    ("plots/roc curve.png", "plots/roc curve.png"),
    ("a/./b", "a/b"),
    ("./metrics.json", "metrics.json"),
    ("a/b/.", "a/b"),
    ("v1.2.3/model.onnx", "v1.2.3/model.onnx"),
    ("a-b_c+d=e@f,g.txt", "a-b_c+d=e@f,g.txt"),
    (".hidden/.config", ".hidden/.config"),
    ("données/résumé.csv", "données/résumé.csv"),
    ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFD input comes back NFC
    ("日本語/ファイル.txt", "日本語/ファイル.txt"),
    ("x" * 255, "x" * 255),
    ("/".join(["a" * 200] * 5) + "/" + "b" * 19, "/".join(["a" * 200] * 5) + "/" + "b" * 19),
]


@pytest.mark.parametrize("path", HOSTILE, ids=repr)
def test_hostile_path_is_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="artifact path"):
        validate_artifact_path(path)


@pytest.mark.parametrize(("path", "expected"), VALID, ids=repr)
def test_valid_path_is_normalised(path: str, expected: str) -> None:
    assert validate_artifact_path(path) == expected
    assert validate_artifact_path(expected) == expected  # idempotent


@pytest.mark.parametrize("value", [None, b"model.skops", 3, Path("a")])
def test_non_string_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="string"):
        validate_artifact_path(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("a/../x", "'..'"),
        ("%2e%2e/x", "percent-encoded"),
        ("a\\b", "backslash"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "drive"),
        ("a\x00b", "U+0000"),
        ("a//b", "empty segment"),
        ("\uff0e\uff0e/x", "FULLWIDTH FULL STOP"),
        ("a#b", "'#'"),
        ("x" * 1025, "1024 bytes"),
    ],
)
def test_message_names_the_problem(path: str, named: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        validate_artifact_path(path)
    assert named in str(excinfo.value)


def _write_under(root: Path, path: str, data: bytes) -> Path:
    """What every writer by path must do: validate, join under the root, then write."""
    rel = validate_artifact_path(path)
    target = root.joinpath(*rel.split("/"))
    assert target.resolve().is_relative_to(root.resolve()), f"{path!r} escapes to {target}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _listing(top: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, name), top)
        for d, dirs, files in os.walk(top)
        for name in dirs + files
    }


def test_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "sandbox" / "artifacts"
    root.mkdir(parents=True)
    before = _listing(tmp_path)

    for path in HOSTILE:
        with pytest.raises(InvalidInput):
            _write_under(root, path, b"hostile")
    assert _listing(tmp_path) == before

    for path, expected in VALID:
        target = _write_under(root, path, b"ok")
        assert target == root.joinpath(*expected.split("/"))
        assert target.read_bytes() == b"ok"
    outside = {p for p in _listing(tmp_path) - before if not p.startswith("sandbox/artifacts/")}
    assert outside == set()
