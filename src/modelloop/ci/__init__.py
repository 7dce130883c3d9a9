"""CI/CD: the files ``modelloop ci init`` writes for GitHub Actions, GitLab CI and Jenkins, and
the verdict ``modelloop ci verdict`` prints in the build log and leaves as its report.

A generated job installs modelloop (with its pip downloads and the pipeline's step cache kept
between runs), runs the pipeline against the team's store with credentials from the CI's
secrets, fails the build with the pipeline's exit code when a gate fails, and keeps the verdict
and the model card as the build's artifact; a scheduled job monitors the champion.
"""

from __future__ import annotations

from modelloop.ci._render import (
    CI_FILES,
    CI_PROVIDERS,
    DEFAULT_SCHEDULE,
    READY_ENV,
    CiOptions,
    CiProvider,
    render_ci,
    write_ci,
)

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
