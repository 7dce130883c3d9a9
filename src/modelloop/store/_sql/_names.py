"""Readable generated run names such as ``brisk-heron-042``."""

from __future__ import annotations

import secrets

__all__ = ["generate_run_name"]

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "dapper", "eager", "fancy", "gentle",
    "glad", "grand", "happy", "hazy", "jolly", "keen", "lively", "lucky", "mellow", "merry",
    "nimble", "noble", "plucky", "proud", "quiet", "rapid", "rosy", "shiny", "silent", "snappy",
    "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise", "witty", "young", "zesty",
)  # fmt: skip
_NOUNS = (
    "badger", "beacon", "bison", "brook", "canyon", "cedar", "comet", "condor", "crane", "delta",
    "dune", "ember", "falcon", "fern", "fjord", "gecko", "glacier", "harbor", "heron", "ibex",
    "lark", "lynx", "maple", "meadow", "moose", "nebula", "otter", "panda", "pine", "puffin",
    "quartz", "raven", "reef", "river", "sparrow", "summit", "tundra", "walrus", "willow", "yak",
)  # fmt: skip


def generate_run_name() -> str:
    """An adjective, a noun and three digits; drawn from the OS so forked processes differ."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(1000):03d}"
