"""A policy task's rollouts as its inner step's support rows, or a clear 422: how many
trajectories and steps, each field's shape against the meta-model's observation and action
sizes, finiteness, done flags; then meta_core's one :func:`meta_core.rl.rollouts.support_set`,
as meta-training made them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.schemas import Trajectory
from app.services.numbers import as_float32
from meta_core.artifact import Artifact
from meta_core.preprocessing import RolloutPreprocessing
from meta_core.rl.rollouts import Rollouts, support_set


def check_counts(trajectories: list[Trajectory], field: str, settings: Settings) -> int:
    """The rollouts' steps in all, once their count and lengths are within the limits (before
    any of their numbers are read)."""
    if not trajectories:
        raise InvalidInput(
            f"{field} is empty: send at least one trajectory, or leave it out to start from "
            "the meta-policy"
        )
    if len(trajectories) > settings.max_trajectories:
        raise InvalidInput(
            f"{field} has {len(trajectories)} trajectories; the limit is "
            f"{settings.max_trajectories}"
        )
    total = 0
    for i, t in enumerate(trajectories):
        steps = len(t.observations)
        if steps == 0:
            raise InvalidInput(f"{field}[{i}] has no steps")
        if steps > settings.max_trajectory_steps:
            raise InvalidInput(
                f"{field}[{i}] has {steps} steps; the limit is {settings.max_trajectory_steps}"
            )
        total += steps
    return total


def per_step(values: list[Any], field: str, steps: int, size: int, expected: str) -> np.ndarray:
    """A ``[steps, size]`` float32 array of one vector a step (a number a step, if ``size``
    is 1), or a 422 that says what was ``expected``."""
    a = as_float32(values, field, "a rectangular array of numbers")
    if size == 1 and a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.shape != (steps, size):
        raise InvalidInput(f"{field} has shape {list(a.shape)}; {expected}")
    return a


def _one(meta_model: Artifact, t: Trajectory, where: str) -> tuple[np.ndarray, ...]:
    """One trajectory's observations, actions, rewards and mask (its steps up to its first
    done), checked."""
    steps = len(t.observations)
    obs_size = meta_model.row_shape[0]
    expected = f"model {meta_model.name!r} observes [steps, {obs_size}]"
    obs = per_step(t.observations, f"{where}.observations", steps, obs_size, expected)
    act_size = meta_model.n_outputs
    expected = f"expected [{steps}, {act_size}] (one action per observation)"
    act = per_step(t.actions, f"{where}.actions", steps, act_size, expected)
    rewards = as_float32(t.rewards, f"{where}.rewards", "an array of numbers")
    if rewards.shape != (steps,):
        raise InvalidInput(
            f"{where}.rewards has shape {list(rewards.shape)}; expected [{steps}] (one reward "
            "per step)"
        )
    if t.dones is not None:
        if len(t.dones) != steps:
            raise InvalidInput(f"{where}.dones has {len(t.dones)} flags for {steps} steps")
        early = [k for k, done in enumerate(t.dones[:-1]) if done]
        if early:
            raise InvalidInput(
                f"{where}.dones says the episode ended at step {early[0]} of {steps}: a "
                "trajectory ends at its first done; send what follows as another trajectory"
            )
    return obs, act, rewards


def to_rollouts(meta_model: Artifact, trajectories: list[Trajectory], field: str) -> Rollouts:
    """The trajectories as one padded batch ``[N, H, ...]`` with its mask."""
    parts = [_one(meta_model, t, f"{field}[{i}]") for i, t in enumerate(trajectories)]
    horizon = max(len(p[0]) for p in parts)
    n = len(parts)
    obs = np.zeros((n, horizon, meta_model.row_shape[0]), np.float32)
    act = np.zeros((n, horizon, meta_model.n_outputs), np.float32)
    rewards = np.zeros((n, horizon), np.float32)
    mask = np.zeros((n, horizon), np.float32)
    for i, (o, a, r) in enumerate(parts):
        steps = len(o)
        obs[i, :steps], act[i, :steps], rewards[i, :steps], mask[i, :steps] = o, a, r, 1.0
    return Rollouts(*(torch.from_numpy(v) for v in (obs, act, rewards, mask)))


def support_rows(meta_model: Artifact, rollouts: Rollouts) -> tuple[Tensor, Tensor]:
    """The inner step's rows (padding dropped: its weights are 0, so the step is the same)."""
    spec = meta_model.manifest.preprocessing
    assert isinstance(spec, RolloutPreprocessing)  # a policy meta-model's (loaded so)
    x, y = support_set(rollouts, spec)
    keep = rollouts.mask.reshape(-1) > 0
    return x[keep], y[keep]


def mean_return(rollouts: Rollouts) -> float:
    """The trajectories' mean return (undiscounted): how the policy that collected them did."""
    return float(rollouts.returns().mean())
