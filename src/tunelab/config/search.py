"""The `search` section of a run config: the space `tunelab tune` samples (studies/tune.py runs the study)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunelab.config.base import Section
from tunelab.config.sections import metric_mode


class ParamSpec(Section):
    """One searched key: `{type: float, low, high, log}`, `{type: int, low, high}` or `{type: categorical, choices}`."""

    type: Literal["float", "int", "categorical"] = Field(description="float, int or categorical.")
    low: float | None = Field(None, description="float / int: smallest value.")
    high: float | None = Field(None, description="float / int: largest value (included).")
    log: bool = Field(False, description="float / int: sample on a log scale (low > 0).")
    step: float | None = Field(None, gt=0, description="float / int: discretisation step (not with log).")
    choices: list[Any] | None = Field(
        None, min_length=1, description="categorical: the values (numbers, strings, booleans, null)."
    )

    @field_validator("choices", mode="before")
    @classmethod
    def _scalars(cls, value: Any) -> Any:
        if isinstance(value, list):
            bad = next((v for v in value if v is not None and not isinstance(v, bool | int | float | str)), None)
            if bad is not None:
                raise ValueError(f"choices must be numbers, strings, booleans or null, not {bad!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("categorical needs choices: [...]")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if extra:
                raise ValueError(f"categorical takes choices only, not {', '.join(extra)}")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log: true cannot be combined")
        if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high, self.step)):
            raise ValueError("int needs whole numbers for low, high and step")
        return self

    def values(self) -> list[Any]:
        """Representative values (the bounds, or every choice) for checking the key before any trial."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class PrunerConfig(Section):
    startup_trials: int = Field(
        5, ge=0, description="Median pruner: finished trials needed before any trial is pruned."
    )
    warmup_steps: int = Field(0, ge=0, description="Median pruner: no pruning before this optimizer step.")


class SearchConfig(Section):
    metric: str | None = Field(
        None, description="Validation metric to optimise (a key of the task's metrics, e.g. accuracy, f1_macro); "
        "default: the task's headline metric (the first)."
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto: minimize when the metric's name has loss, error or perplexity, else maximize."
    )
    space: dict[str, ParamSpec] = Field(
        min_length=1, description="Dotted config key → {type, low, high, log, step} (float, int) or "
        "{type: categorical, choices}, e.g. `train.lr: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}`."
    )
    pruner: PrunerConfig | None = Field(
        default_factory=PrunerConfig,
        description="Median pruner on the evaluations during training (train.eval_steps); false = off.",
    )

    @field_validator("pruner", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @field_validator("space", mode="before")
    @classmethod
    def _flatten(cls, value: Any, prefix: str = "") -> Any:
        """Nested mappings become dotted keys: `--set search.space.train.lr={type: float, ...}` and
        `space: {train: {lr: {...}}}` both mean the key `train.lr`."""
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, spec in value.items():
            nested = isinstance(spec, dict) and spec and "type" not in spec and all(
                isinstance(v, dict) for v in spec.values())
            out.update(cls._flatten(spec, f"{prefix}{key}.") if nested else {f"{prefix}{key}": spec})
        return out

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for key in space:
            if not key or any(not p for p in key.split(".")):
                raise ValueError(f"{key!r} is not a dotted config key (e.g. train.lr)")
            if key == "output_dir" or key.split(".")[0] == "search":
                raise ValueError(f"{key}: cannot be searched (set by tunelab tune)")
        return space

    def study_direction(self, headline: str = "score") -> str:
        """`metric`'s direction, or with metric: null the task's headline metric's (`Task.headline`: a loss is
        minimised, a score maximised), unless `direction` says."""
        if self.direction != "auto":
            return self.direction
        return "minimize" if metric_mode(self.metric or headline) == "min" else "maximize"
