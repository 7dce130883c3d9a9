"""What a new user installs: extras that resolve the same way everywhere, and the repository's
tests and benchmarks depending on nothing outside it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extra(name: str) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][name]]
    return {r.name.lower(): r for r in reqs}


def test_onnx_extra_excludes_protobuf_7() -> None:
    # onnx/skl2onnx crash on protobuf 7 ("Expected an int, got a boolean") while converting
    protobuf = _extra("onnx")["protobuf"]
    assert not protobuf.specifier.contains(Version("7.0.0"))
    assert protobuf.specifier.contains(Version("6.33.6"))


def test_test_extra_pins_the_s3_client_chain_consistently() -> None:
    test = _extra("test")
    pinned = {}
    for name in ("s3fs", "fsspec", "aiobotocore", "botocore", "boto3", "moto"):
        spec = str(test[name].specifier)
        assert spec.startswith("=="), f"{name} must be pinned in the test extra, got {spec!r}"
        pinned[name] = spec[2:]
    assert pinned["s3fs"] == pinned["fsspec"]  # s3fs requires its own fsspec release
    assert pinned["boto3"] == pinned["botocore"]  # boto3 requires botocore of its own release


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    open_ended = {"fsspec"}  # follows s3fs's calendar releases, bounded by the s3 pins
    groups = {"dependencies": PYPROJECT["project"]["dependencies"]}
    groups.update(PYPROJECT["project"]["optional-dependencies"])
    for group, reqs in groups.items():
        for text in reqs:
            req = Requirement(text)
            if req.name in {"modelloop", *open_ended} or group == "s3":
                continue
            ops = {s.operator for s in req.specifier}
            assert ops & {"<", "==", "~="}, f"{group}: {text} has no upper bound"


def test_tests_and_benchmarks_read_nothing_outside_the_repository() -> None:
    # relative escapes, and the folder above this checkout spelt out (wherever it is cloned)
    outside = re.compile(
        r"shared/bench|parents\[[3-9]\]|MODELLOOP_BENCH_DIR|" + re.escape(str(ROOT.parent) + "/")
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for folder in ("tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "test_install.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert offenders == []


def test_ci_runs_the_readme_test_command_in_a_venv_of_its_own() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Two commands") :]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    install_and_run, test_command = blocks[0], blocks[1]
    assert install_and_run == "pip install -e . && modelloop quickstart"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    venv = next(i for i, line in enumerate(ci) if line.startswith("python3 -m venv "))
    activate = next(i for i, line in enumerate(ci) if line.endswith("/bin/activate"))
    assert venv < activate < ci.index(test_command)
