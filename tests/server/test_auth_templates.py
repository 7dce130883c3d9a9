"""The route an audit event records: the template with its router prefixes, never the concrete
path (ids, names) or a query string."""

from __future__ import annotations

import pytest

from modelloop.access import Role
from modelloop.server._auth import _full_template, require


@pytest.mark.parametrize(
    ("path", "template", "expected"),
    [
        ("/api/v1/users/bob", "/users/{name}", "/api/v1/users/{name}"),
        ("/api/v1/users", "/users", "/api/v1/users"),
        ("/users/bob", "/users/{name}", "/users/{name}"),  # already whole
        ("/api/v1/users/bob", "/api/v1/users/{name}", "/api/v1/users/{name}"),
        ("/api/v1/runs/r1/artifacts/a/b/c.txt", "/runs/{run_id}/artifacts/{path:path}",
         "/api/v1/runs/{run_id}/artifacts/{path:path}"),
        ("/api/v1/models/m/versions/3", "/models/{name}/versions/{version}",
         "/api/v1/models/{name}/versions/{version}"),
    ],
)  # fmt: skip
def test_full_template(path: str, template: str, expected: str) -> None:
    assert _full_template(path, template) == expected


def test_require_gives_one_dependency_per_role() -> None:
    assert require(Role.EDITOR) is require(Role.EDITOR)
    assert require(Role.EDITOR) is not require(Role.ADMIN)
    assert require(Role.ADMIN).__name__ == "require_admin"
