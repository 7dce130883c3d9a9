"""The CI files ``modelloop ci init`` writes: one template per provider, filled with the
pipeline's path, the model's name and the three shell scripts every provider runs (install,
pipeline, monitor), so the steps a test runs locally are the steps every provider runs."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from modelloop.exceptions import Conflict, InvalidInput

__all__ = [
    "CI_FILES",
    "CI_PROVIDERS",
    "DEFAULT_SCHEDULE",
    "READY_ENV",
    "CiOptions",
    "CiProvider",
    "render_ci",
    "write_ci",
]

CiProvider = Literal["github", "gitlab", "jenkins"]
CI_PROVIDERS: tuple[CiProvider, ...] = ("github", "gitlab", "jenkins")
#: Where each provider reads its file, relative to the repository root.
CI_FILES: dict[str, str] = {
    "github": ".github/workflows/modelloop.yml",
    "gitlab": ".gitlab-ci.yml",
    "jenkins": "Jenkinsfile",
}
_TEMPLATES = {"github": "github.yml", "gitlab": "gitlab.yml", "jenkins": "Jenkinsfile"}
#: Once a day, at a minute few other schedules use.
DEFAULT_SCHEDULE = "17 6 * * *"
#: Set to 1 when the job's Python environment already has modelloop: the install step then
#: installs nothing (a runner image built with it, or a local run of the steps).
READY_ENV = "MODELLOOP_CI_READY"

_INSTALL = f"""\
if [ "${{{READY_ENV}:-}}" = "1" ]; then
  echo "{READY_ENV}=1: the Python environment is ready; nothing installed"
else
  python -m pip install --upgrade pip
  python -m pip install "$MODELLOOP_INSTALL"
  if [ -f requirements.txt ]; then python -m pip install -r requirements.txt; fi
fi
modelloop --version"""

# The pipeline's exit code (10: a gate failed, 11: data validation failed, 2: a bad pipeline
# file) is the step's, after the verdict has been printed and the card written.
_PIPELINE = "\n".join(
    [
        'mkdir -p "$MODELLOOP_REPORT"',
        "status=0",
        'modelloop pipeline run "$MODELLOOP_PIPELINE" --json > "$MODELLOOP_REPORT/pipeline.json"'
        " || status=$?",
        'modelloop ci verdict "$MODELLOOP_REPORT/pipeline.json" --exit-code "$status"'
        ' --out "$MODELLOOP_REPORT" || echo "modelloop ci verdict failed (see above)"',
        'exit "$status"',
    ]
)

# The prediction log the serving replicas write is read from MODELLOOP_MONITOR_DATA (a Parquet
# file, a folder of segments or a URL such as s3://bucket/predictions/model/) when it is set;
# else from the job's own home, which only a self-hosted runner beside the server has.
_MONITOR = "\n".join(
    [
        'mkdir -p "$MODELLOOP_REPORT"',
        "set --",
        'if [ -n "${MODELLOOP_MONITOR_DATA:-}" ]; then set -- --data "$MODELLOOP_MONITOR_DATA"; fi',
        "status=0",
        'modelloop monitor run "$MODELLOOP_MODEL@champion" --window <<WINDOW>> "$@"'
        " --fail-on-alert || status=$?",
        'modelloop monitor report "$MODELLOOP_MODEL@champion" --window <<WINDOW>> "$@"'
        ' --out "$MODELLOOP_REPORT/monitor.html" || echo "no monitoring report written"',
        'exit "$status"',
    ]
)

_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-]+$")
_WINDOW = re.compile(r"^(day|week|day-[0-9]+|[0-9]+(m|h|d)|[0-9]+rows)$")
_INSTALL_SPEC = re.compile(r"^[A-Za-z0-9._\-\[\],=<>~!:/+@ ]+$")


@dataclass(frozen=True)
class CiOptions:
    """What goes into a CI file: the pipeline file (relative to the repository root, with
    ``/``), the registered model the monitoring job watches, the branch whose pushes run the
    pipeline, the monitoring schedule (cron, 5 fields), its window, the Python version and the
    requirement pip installs."""

    pipeline: str
    model: str
    branch: str = "main"
    schedule: str = DEFAULT_SCHEDULE
    window: str = "day"
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    install: str = ""

    def __post_init__(self) -> None:
        from modelloop import __version__
        from modelloop._names import check_model_name

        if not self.install:
            default = f"modelloop[pipeline,monitoring,postgres,s3]=={__version__}"
            object.__setattr__(self, "install", default)
        problems = []
        if (
            not _PATH.fullmatch(self.pipeline)
            or self.pipeline.startswith("/")
            or ".." in self.pipeline.split("/")
        ):
            problems.append(
                f"pipeline {self.pipeline!r}: give a path inside the repository, relative to its "
                "root, of letters, digits, '.', '_', '-' and '/'"
            )
        try:
            check_model_name(self.model)
        except InvalidInput as exc:
            problems.append(str(exc))
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", self.branch):
            problems.append(f"branch {self.branch!r}: letters, digits, '.', '_', '-', '/' only")
        fields = self.schedule.split()
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            problems.append(
                f"schedule {self.schedule!r}: give a cron expression of 5 fields "
                "(minute hour day month weekday), e.g. '17 6 * * *'"
            )
        if not _WINDOW.fullmatch(self.window):
            problems.append(
                f"window {self.window!r}: use day, week, day-1, 30m, 2h, 7d or 1000rows"
            )
        if not re.fullmatch(r"3\.[0-9]{1,2}", self.python):
            problems.append(f"python {self.python!r}: give a version such as 3.11")
        if not _INSTALL_SPEC.fullmatch(self.install):
            problems.append(
                f"install {self.install!r}: give one pip requirement, e.g. "
                "'modelloop[pipeline]==0.1.0' or '.'"
            )
        if problems:
            raise InvalidInput("ci init: " + "; ".join(problems))


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _groovy(value: str) -> str:
    """``value`` inside a Groovy single-quoted string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def render_ci(provider: str, options: CiOptions) -> str:
    """The text of ``provider``'s CI file (``github``, ``gitlab`` or ``jenkins``)."""
    from modelloop import __version__

    if provider not in CI_PROVIDERS:
        raise InvalidInput(f"unknown CI provider {provider!r}: use {', '.join(CI_PROVIDERS)}")
    template = (
        resources.files("modelloop.ci")
        .joinpath("templates", _TEMPLATES[provider])
        .read_text(encoding="utf-8")
    )
    monitor = _MONITOR.replace("<<WINDOW>>", options.window)
    # scripts sit at the indentation of their block (none inside a Groovy ''' string)
    spaces = {"github": 10, "gitlab": 6, "jenkins": 0}[provider]
    values = {
        "VERSION": __version__,
        "MODEL": options.model,
        "PIPELINE": options.pipeline,
        "BRANCH": options.branch,
        "CRON": options.schedule,
        "CRON_JENKINS": options.schedule,
        "PYTHON": options.python,
        "PIPELINE_YAML": json.dumps(options.pipeline),
        "MODEL_YAML": json.dumps(options.model),
        "INSTALL_YAML": json.dumps(options.install),
        "PIPELINE_GROOVY": _groovy(options.pipeline),
        "MODEL_GROOVY": _groovy(options.model),
        "INSTALL_GROOVY": _groovy(options.install),
        "INSTALL_SCRIPT": _indent(_INSTALL, spaces),
        "PIPELINE_SCRIPT": _indent(_PIPELINE, spaces),
        "MONITOR_SCRIPT": _indent(monitor, spaces),
    }

    def fill(m: re.Match[str]) -> str:
        return values[m.group(1)]

    text = re.sub(r"<<([A-Z_]+)>>", fill, template)
    return text


def write_ci(
    root: str | os.PathLike[str],
    provider: str,
    options: CiOptions,
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Write ``provider``'s CI file under ``root`` (or at ``out``) and return its path;
    ``Conflict`` when the file exists and ``force`` is false. The file appears whole or not at
    all (written beside its place and renamed)."""
    text = render_ci(provider, options)
    target = Path(out) if out is not None else Path(root) / CI_FILES[provider]
    if target.exists() and not force:
        raise Conflict(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
