"""Role order, role parsing and what a principal may do."""

from __future__ import annotations

import itertools

import pytest

from modelloop.access import Role
from modelloop.exceptions import InvalidInput
from modelloop.server._auth import OPEN_MODE_PRINCIPAL, Principal

ORDER = [Role.VIEWER, Role.EDITOR, Role.DEPLOYER, Role.ADMIN]


def test_roles_are_ordered_viewer_editor_deployer_admin() -> None:
    assert sorted(reversed(ORDER)) == ORDER
    assert [r.rank for r in ORDER] == [0, 1, 2, 3]
    for low, high in itertools.combinations(ORDER, 2):
        assert low < high and low <= high and high > low and high >= low
        assert not (high < low) and not (low >= high) and low != high
    assert Role.EDITOR >= "viewer" and Role.EDITOR < "admin"  # names compare by rank too
    assert Role.ADMIN == "admin" and Role("deployer") is Role.DEPLOYER


def test_roles_compare_by_rank_not_alphabet() -> None:
    # alphabetically "admin" < "deployer" < "editor" < "viewer": the opposite of the rank
    assert max(ORDER) is Role.ADMIN and min(ORDER) is Role.VIEWER
    assert Role.ADMIN > Role.VIEWER and "admin" < "viewer"


def test_parse_accepts_any_case_and_names_the_choices() -> None:
    assert Role.parse(" Editor ") is Role.EDITOR and Role.parse(Role.ADMIN) is Role.ADMIN
    for bad in ("root", "", None, 3):
        with pytest.raises(InvalidInput, match="viewer, editor, deployer, admin"):
            Role.parse(bad)
    with pytest.raises(TypeError):
        _ = Role.ADMIN < "root"


@pytest.mark.parametrize("has", ORDER)
@pytest.mark.parametrize("needs", ORDER)
def test_a_principal_may_what_its_role_reaches(has: Role, needs: Role) -> None:
    p = Principal("u", has, None)
    assert p.may(needs) is (has.rank >= needs.rank)
    assert p.may(needs, "any-model") is (has.rank >= needs.rank)


def test_a_scoped_principal_acts_only_on_its_models() -> None:
    p = Principal("u", Role.DEPLOYER, frozenset({"m1"}))
    assert p.may(Role.DEPLOYER, "m1") and p.may(Role.VIEWER, "m1")
    assert not p.may(Role.VIEWER, "m2") and not p.may(Role.DEPLOYER, "m2")
    assert not p.may(Role.ADMIN, "m1")
    assert p.may(Role.EDITOR)  # a write that names no model (e.g. a run)
    assert Principal("local", Role.ADMIN, None) == OPEN_MODE_PRINCIPAL


def test_the_access_package_surface_is_locked_and_light() -> None:
    import json
    import subprocess
    import sys

    import modelloop.access

    assert sorted(modelloop.access.__all__) == [
        "Role", "TOKEN_PREFIX", "TokenInfo", "User", "parse_token",
    ]  # fmt: skip
    code = (
        "import sys, json, modelloop.access; "
        "print(json.dumps([m for m in ('fastapi', 'httpx', 'sqlalchemy') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
