"""The loop policy: when to retrain, on what, how the challenger is gated and rolled out, and how
each rollout step is judged.

Declared as a ``loop:`` section of ``modelloop.yaml`` or as a file of its own::

    loop:
      model: flights-delay
      every: 5m
      cooldown: 6h
      max_retrains_per_day: 2
      triggers:
        drift_share: 0.5            # dataset drift share at or above
        calibrated_drift: 0.2       # share of inputs outside their history-calibrated range
        drifted_features: [dep_delay]
        prediction_drift: true
        metric_floor: {auc: 0.80}   # live metric below a floor
        metric_drop: {auc: 0.03}    # live metric below the version's offline value by more
        max_age: 30d
        new_labels: 20000           # labelled rows since the last training
      training: {source: log, window: 60d, mode: sliding, min_labelled_rows: 2000}
      gate: {metric: auc, window: 7d, min_rows: 500, tolerance: 0.0}
      rollout:
        shadow: {min_duration: 30m, min_outcomes: 200, max_duration: 6h}
        canary: {steps: [0.05, 0.25, 0.5], min_duration: 30m, min_outcomes: 200, max_duration: 24h}
        approval: none              # or before_rollout, before_promote, both
        approval_timeout: 2d        # optional: an approval not given in time is a rejection
      judge: {alpha: 0.05, margin: 0.01, max_p99_latency_ratio: 1.5, max_error_rate: 0.01,
              inconclusive: rollback}

Every wrong field is reported at once with its location, as for pipeline files. Defaults are the
safe ones: a challenger reaches ``champion`` only through at least one judged step with labelled
evidence.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelloop._validation import error_lines
from modelloop.exceptions import InvalidInput, NotFound

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "CanaryStep",
    "GateSpec",
    "JudgeSpec",
    "LoopPolicy",
    "RolloutSpec",
    "StageSpec",
    "TrainingSpec",
    "TriggerSpec",
    "load_policy",
    "parse_policy",
]

#: Live metrics monitoring computes from labelled predictions, by task; higher is better for
#: the classification ones, lower for the regression ones.
CLASSIFICATION_METRICS = ("accuracy", "f1", "auc")
REGRESSION_METRICS = ("mae", "rmse")
_METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)


def _seconds(value: Any) -> float:
    """A duration given as ``30s``, ``5m``, ``6h``, ``7d``, ``2w`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        from modelloop.monitoring._windows import LastDuration, parse_window

        try:
            window = parse_window(value)
        except InvalidInput:
            window = None
        if not isinstance(window, LastDuration):
            raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '5m', '6h', '7d'")
        seconds = window.duration.total_seconds()
    else:
        raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '5m', '6h', '7d'")
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def _known_metric(name: str) -> str:
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; use one of {', '.join(_METRICS)}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerSpec(_Strict):
    """What starts a retrain; any one trigger is enough. ``modelloop loop retrain`` always can."""

    drift_share: float | None = Field(default=None, gt=0, le=1)
    #: share of inputs outside their learned normal range (``modelloop monitor calibrate``)
    calibrated_drift: float | None = Field(default=None, gt=0, le=1)
    drifted_features: tuple[str, ...] = ()
    prediction_drift: bool = False
    metric_floor: dict[str, float] = Field(default_factory=dict)
    metric_drop: dict[str, float] = Field(default_factory=dict)
    max_age_s: float | None = Field(default=None, alias="max_age")
    new_labels: int | None = Field(default=None, ge=1)

    @field_validator("max_age_s", mode="before")
    @classmethod
    def _age(cls, v: Any) -> Any:
        return None if v is None else _seconds(v)

    @field_validator("metric_floor", "metric_drop")
    @classmethod
    def _metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            _known_metric(name)
        return v

    @field_validator("metric_drop")
    @classmethod
    def _positive_drops(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not x > 0]
        if bad:
            raise ValueError(f"a drop must be positive: {', '.join(bad)}")
        return v


class TrainingSpec(_Strict):
    """The data a retrain uses: served inputs joined with their labels (``log``), the pipeline's
    own data source (``pipeline``), or both; the log part over a sliding or expanding window."""

    source: Literal["log", "pipeline", "both"] = "log"
    window_s: float = Field(default=60 * 86400, alias="window")
    mode: Literal["sliding", "expanding"] = "sliding"
    min_labelled_rows: int = Field(default=1000, ge=1)

    @field_validator("window_s", mode="before")
    @classmethod
    def _window(cls, v: Any) -> float:
        return _seconds(v)


class GateSpec(_Strict):
    """The pipeline's own gates, plus challenger vs champion on the most recent labelled window."""

    pipeline_gates: bool = True
    metric: str = "auc"
    window_s: float = Field(default=7 * 86400, alias="window")
    min_rows: int = Field(default=500, ge=1)
    tolerance: float = Field(default=0.0, ge=0)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _known_metric(v)

    @field_validator("window_s", mode="before")
    @classmethod
    def _window(cls, v: Any) -> float:
        return _seconds(v)


class StageSpec(_Strict):
    """How long a rollout stage lasts at least and at most, and the labelled outcomes it needs."""

    min_duration_s: float = Field(default=1800, alias="min_duration")
    max_duration_s: float = Field(default=86400, alias="max_duration")
    min_outcomes: int = Field(default=200, ge=1)

    @field_validator("min_duration_s", "max_duration_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return _seconds(v)

    @model_validator(mode="after")
    def _order(self) -> StageSpec:
        if self.max_duration_s < self.min_duration_s:
            raise ValueError("max_duration must be at least min_duration")
        return self


class CanarySpec(StageSpec):
    """Canary steps: the challenger's share of traffic at each step, strictly increasing."""

    steps: tuple[float, ...] = (0.05, 0.25, 0.5)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("give at least one step, e.g. [0.05, 0.25, 0.5]")
        if any(not 0 < s < 1 for s in v):
            raise ValueError("every step is a share of traffic strictly between 0 and 1")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"steps must increase strictly, got {list(v)}")
        return v


class RolloutSpec(_Strict):
    """Shadow first, canary steps, or both; then promote or roll back."""

    shadow: StageSpec | None = None
    canary: CanarySpec | None = Field(default_factory=CanarySpec)
    #: where the loop waits for a person (``modelloop loop approve``): after the gate, before
    #: the first stage (``before_rollout``); after the last stage passed, before the promotion
    #: (``before_promote``); at both; or nowhere (``none``, the default).
    approval: Literal["none", "before_rollout", "before_promote", "both"] = "none"
    #: how long a wait for approval lasts before it counts as a rejection (None: no limit)
    approval_timeout_s: float | None = Field(default=None, alias="approval_timeout")

    @field_validator("approval_timeout_s", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> Any:
        return None if v is None else _seconds(v)

    def needs_approval(self, point: Literal["rollout", "promote"]) -> bool:
        """Whether the loop waits for a person before ``point``."""
        return self.approval in ("both", f"before_{point}")

    @model_validator(mode="after")
    def _some_stage(self) -> RolloutSpec:
        if self.shadow is None and self.canary is None:
            raise ValueError(
                "a rollout needs a shadow stage, canary steps or both: nothing is promoted "
                "without labelled evidence"
            )
        return self


class JudgeSpec(_Strict):
    """How one rollout step is judged: a one-sided test at ``alpha`` on the difference of error
    rates (classification) or Mann-Whitney on per-row losses (regression), a non-inferiority
    ``margin``, guards on the challenger's p99 latency and server error rate, and what an
    inconclusive step (too few labels in time) does."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    margin: float = Field(default=0.01, ge=0)
    max_p99_latency_ratio: float | None = Field(default=1.5, gt=1)
    max_error_rate: float | None = Field(default=0.01, ge=0, lt=1)
    inconclusive: Literal["rollback", "wait"] = "rollback"
    max_waits: int = Field(default=2, ge=1)


class CanaryStep(_Strict):
    """One stage of a rollout as the controller runs it."""

    mode: Literal["shadow", "canary"]
    share: float
    min_duration_s: float
    max_duration_s: float
    min_outcomes: int


class LoopPolicy(_Strict):
    """The whole policy of one model's loop."""

    model: str | None = None
    every_s: float = Field(default=300, alias="every")
    cooldown_s: float = Field(default=6 * 3600, alias="cooldown")
    max_retrains_per_day: int = Field(default=2, ge=1)
    triggers: TriggerSpec = Field(default_factory=TriggerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    server: str | None = None
    token_env: str = "MODELLOOP_SERVE_TOKEN"

    @field_validator("every_s", "cooldown_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return _seconds(v)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None:
            from modelloop._names import check_model_name

            try:
                check_model_name(v)
            except InvalidInput as exc:  # pydantic reports ValueErrors with their location
                raise ValueError(str(exc)) from None
        return v

    @field_validator("server")
    @classmethod
    def _server(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"server {v!r} must be an http:// or https:// URL")
        return v.rstrip("/") if v else v

    def stages(self) -> list[CanaryStep]:
        """The rollout as the controller runs it: the shadow stage, then each canary step."""
        out = []
        if (s := self.rollout.shadow) is not None:
            out.append(CanaryStep(mode="shadow", share=0.0, **_limits(s)))
        if (c := self.rollout.canary) is not None:
            out.extend(CanaryStep(mode="canary", share=x, **_limits(c)) for x in c.steps)
        return out

    @property
    def every(self) -> timedelta:
        return timedelta(seconds=self.every_s)


def _limits(stage: StageSpec) -> dict[str, Any]:
    return {
        "min_duration_s": stage.min_duration_s,
        "max_duration_s": stage.max_duration_s,
        "min_outcomes": stage.min_outcomes,
    }


def parse_policy(raw: Mapping[str, Any], *, source: str = "loop") -> LoopPolicy:
    """Validate a policy given as a mapping; ``InvalidInput`` lists every wrong field as
    ``<source>: <location>: <problem>``."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return LoopPolicy.model_validate(dict(raw))
    except ValidationError as exc:
        raise InvalidInput("\n".join(error_lines(exc, source))) from None


def load_policy(path: str | os.PathLike[str]) -> LoopPolicy:
    """The policy in a file: the ``loop:`` section of a pipeline file, or a whole file of its
    own. A pipeline file's ``register.model_name`` is the model when the policy names none."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no loop policy file at {p}")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{p.name}: not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{p.name}: expected a mapping of fields")
    if "loop" in doc:
        section = doc["loop"]
        if not isinstance(section, Mapping):
            raise InvalidInput(f"{p.name}: loop: expected a mapping of fields")
        register = doc.get("register")
        name = register.get("model_name") if isinstance(register, Mapping) else None
        if "model" not in section and name:
            section = {**section, "model": name}
        return parse_policy(section, source=f"{p.name}: loop")
    return parse_policy(doc, source=p.name)
