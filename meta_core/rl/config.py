"""A policy meta-training run's configuration, read from a TOML preset (``navigation-2d``,
``half-cheetah-vel``, ``half-cheetah-dir``) as the supervised runs' is
(:mod:`meta_core.config`): every field can be overridden with ``--set section.field=value``.
``env`` is one environment family's section, chosen by its ``name``."""

from __future__ import annotations

import tomllib
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from meta_core.config import apply_overrides, preset_path
from meta_core.networks import first_error


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NavigationConfig(Section):
    """The MAML paper's 2D navigation (:mod:`meta_core.rl.navigation`)."""

    name: Literal["navigation-2d"] = "navigation-2d"
    observation_size: ClassVar[int] = 2
    action_size: ClassVar[int] = 2
    goal_low: float = -0.5
    goal_high: float = 0.5
    max_action: float = Field(0.1, gt=0)
    horizon: int = Field(100, ge=1)
    success_radius: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _square(self) -> NavigationConfig:
        if self.goal_low >= self.goal_high:
            raise ValueError("goal_low must be below goal_high")
        return self

    @property
    def action_box(self) -> tuple[float, float]:
        return -self.max_action, self.max_action


class HalfCheetahConfig(Section):
    """The MAML paper's half-cheetah tasks (:mod:`meta_core.rl.half_cheetah`) on gymnasium's
    HalfCheetah-v5: run at a goal velocity drawn from ``[velocity_low, velocity_high]``
    (reward ``-|v - goal| - ctrl_cost ||a||^2``), or forward or backward (``dir * v -
    ctrl_cost ||a||^2``), ``v`` the torso's forward velocity."""

    name: Literal["half-cheetah"] = "half-cheetah"
    observation_size: ClassVar[int] = 17
    action_size: ClassVar[int] = 6
    goal: Literal["velocity", "direction"] = "velocity"
    velocity_low: float = Field(0.0, ge=0)
    velocity_high: float = Field(2.0, ge=0)
    ctrl_cost: float = Field(0.05, ge=0)
    horizon: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _range(self) -> HalfCheetahConfig:
        if self.velocity_low > self.velocity_high:
            raise ValueError("velocity_low must not be above velocity_high")
        return self

    @property
    def action_box(self) -> tuple[float, float]:
        return -1.0, 1.0  # the model's actuator control range


EnvConfig = Annotated[NavigationConfig | HalfCheetahConfig, Field(discriminator="name")]


class PolicyConfig(Section):
    hidden: list[int] = Field(default_factory=lambda: [100, 100])
    init_log_std: float = 0.0


class AdaptationConfig(Section):
    """The inner step: REINFORCE with a fitted linear-feature baseline, as the paper."""

    inner_steps: int = Field(1, ge=0)  # 0: no adaptation (a pretrained multi-task policy)
    inner_lr: float = Field(0.1, gt=0)
    # The lr of each step after the first (None: inner_lr), for evaluation and the service:
    # meta-training takes one step. A policy one step on is sharper than the meta-policy,
    # and a step of inner_lr from it overshoots (docs/rl.md has the measurement).
    later_lr: float | None = Field(None, gt=0)
    first_order: StrictBool = False
    trajectories: int = Field(20, ge=1)  # per task and step
    gamma: float = Field(0.99, gt=0, le=1)
    baseline_reg: float = Field(1e-5, gt=0)


class TRPOConfig(Section):
    """The outer step (Schulman et al. 2015), with the paper's settings."""

    max_kl: float = Field(0.01, gt=0)
    cg_iterations: int = Field(10, ge=1)
    cg_damping: float = Field(1e-5, ge=0)
    line_search_steps: int = Field(15, ge=1)
    line_search_backtrack: float = Field(0.8, gt=0, lt=1)


class RunConfig(Section):
    iterations: int = Field(500, ge=0)
    meta_batch: int = Field(20, ge=1)
    seed: int = 0
    threads: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    name: str = "navigation-2d"
    version: str = ""  # default: the time the run ends


class EvalConfig(Section):
    """Returns on tasks no run trained on (drawn with their own seed) after 0..steps steps."""

    tasks: int = Field(100, ge=2)
    steps: int = Field(3, ge=0)
    seed: int = 1_000_003
    baseline_iterations: int = Field(0, ge=0)  # 0: as many as the meta-training run's
    # The lr of the steps after the first, for every method (0: the meta-model's later_lr,
    # else its inner_lr).
    later_lr: float = Field(0.0, ge=0)
    # Also write the pretrained baseline as an artifact (baselines/pretrained, named
    # "<name>-pretrained"), to serve beside the meta-model and compare through the API.
    save_baselines: StrictBool = False


class PolicyRunConfig(BaseModel):
    """Every section of a policy meta-training run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["policy"] = "policy"
    env: EnvConfig = Field(default_factory=NavigationConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    trpo: TRPOConfig = Field(default_factory=TRPOConfig)
    train: RunConfig = Field(default_factory=RunConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def load_policy_config(preset: str, overrides: list[str] | None = None) -> PolicyRunConfig:
    """A preset (a name in meta_core/presets or a path) with ``section.field=value``
    overrides, validated; a ``ValueError`` names the first problem."""
    data: dict[str, Any] = tomllib.loads(preset_path(preset).read_text())
    try:
        return PolicyRunConfig.model_validate(apply_overrides(data, overrides or []))
    except ValidationError as exc:
        raise ValueError(f"bad configuration: {first_error(exc)}") from None


def is_policy_preset(preset: str) -> bool:
    """Whether a preset is a policy run's (``kind = "policy"``)."""
    return bool(tomllib.loads(preset_path(preset).read_text()).get("kind") == "policy")
