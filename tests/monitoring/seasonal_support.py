"""The generated seasonal stream of benchmarks/drift_seasonal.py, loaded from that file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "drift_seasonal.py"
_spec = importlib.util.spec_from_file_location("modelloop_bench_drift_seasonal", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

T0 = _module.T0
NUM, CAT = _module.NUM, _module.CAT
window, stream, reference = _module.window, _module.stream, _module.reference
