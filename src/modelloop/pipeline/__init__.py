"""Training pipelines declared in ``modelloop.yaml`` or Python: load → validate → split →
(tune →) train → evaluate → explain → gate → register, each step cached by a digest of its
inputs, code and parameters."""

from __future__ import annotations

from modelloop.pipeline._runner import Pipeline, PipelineResult, StepEvent, StepRecord
from modelloop.pipeline._spec import (
    DataSpec,
    EvaluationSpec,
    ExplainSpec,
    ModelSpec,
    ParamSpace,
    PipelineSpec,
    RegisterSpec,
    SplitSpec,
    TuneSpec,
    ValidationSpec,
    build_model,
    load_spec,
    parse_spec,
)

__all__ = [
    "DataSpec",
    "EvaluationSpec",
    "ExplainSpec",
    "ModelSpec",
    "ParamSpace",
    "Pipeline",
    "PipelineResult",
    "PipelineSpec",
    "RegisterSpec",
    "SplitSpec",
    "StepEvent",
    "StepRecord",
    "TuneSpec",
    "ValidationSpec",
    "build_model",
    "load_spec",
    "parse_spec",
]
