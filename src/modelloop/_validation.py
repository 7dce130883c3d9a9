"""One way to say what pydantic found wrong in a file a user wrote (a pipeline, a loop policy):
``<source>: <location>: <problem>``, one line per problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["error_lines"]


def error_lines(exc: ValidationError, source: str) -> list[str]:
    """Every problem of ``exc`` on its own line, each line once, in the order found."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field missing"
        lines.append(f"{source}: {loc}: {msg}")
    return list(dict.fromkeys(lines))
