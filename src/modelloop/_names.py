"""The one place that says what a registered model name and an alias may be, and what the
prediction log's own columns are called.

Model names become URI parts (``models:/NAME@ALIAS``), folder names (prediction logs) and metric
labels, so they are an allow-list: a letter or digit first, then letters, digits, ``_ . -``, at
most 128 characters, never ``..``. Aliases are 1-64 of ``A-Z a-z 0-9 _ -`` and not all digits
(an all-digit alias would read as a version number).
"""

from __future__ import annotations

import re

from modelloop.exceptions import InvalidInput

__all__ = [
    "ALIAS_PATTERN",
    "MODEL_NAME_PATTERN",
    "PREDICTION_COLUMNS",
    "check_alias",
    "check_model_name",
]

#: Columns every prediction-log segment carries besides the inputs and outputs, in this order
#: (the server writes them, monitoring reads them).
PREDICTION_COLUMNS = ("request_id", "timestamp", "model_name", "model_version", "route")

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
ALIAS_PATTERN = r"[A-Za-z0-9_\-]{1,64}"
_MODEL = re.compile(MODEL_NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid registered model name, else raise ``InvalidInput``."""
    if not isinstance(name, str) or not _MODEL.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '.', '-', starting "
            "with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """Return ``alias`` if it is a valid alias, else raise ``InvalidInput``."""
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidInput(f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-'")
    if alias.isdigit():
        raise InvalidInput(f"invalid alias {alias!r}: all digits would read as a version number")
    return alias
