"""Demos built on the bundled NYC flights 2013 data."""

from __future__ import annotations

from modelloop.demo._loop import LoopDemoResult, run_loop_demo
from modelloop.demo._loop_page import loop_demo_page
from modelloop.demo._quickstart import (
    QUICKSTART_STEPS,
    QuickstartResult,
    build_model,
    run_quickstart,
)
from modelloop.demo._replay import ReplayResult, replay_flights, replay_frame

__all__ = [
    "QUICKSTART_STEPS",
    "LoopDemoResult",
    "QuickstartResult",
    "ReplayResult",
    "build_model",
    "loop_demo_page",
    "replay_flights",
    "replay_frame",
    "run_loop_demo",
    "run_quickstart",
]
