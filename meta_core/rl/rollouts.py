"""Rollouts and what the inner step learns from them, written once for meta-training,
evaluation and the service.

A batch of rollouts is ``[..., trajectories, steps, ...]`` tensors with a ``mask`` that is 1 on
the steps a trajectory took (shorter ones are padded). :func:`support_set` turns it into the
inner loop's support rows (:func:`meta_core.inner_loop.policy_gradient_loss`): each step's
observation, and its action with a weight, the step's advantage over a linear-feature
baseline fitted to the batch's returns (Duan et al. 2016; the MAML paper's), normalised, and
divided by its trajectory's length and the number of trajectories."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from meta_core.inner_loop import forward
from meta_core.preprocessing import RolloutPreprocessing
from meta_core.rl.environments import Environment

FEATURE_TIME_SCALE = 100.0  # the baseline's time feature is t / 100, as the reference's


@dataclass(frozen=True)
class Rollouts:
    """``observations [..., N, H, D]``, ``actions [..., N, H, A]`` (as sampled, before any
    clipping by the environment), ``rewards [..., N, H]`` and ``mask [..., N, H]``."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor

    def returns(self) -> Tensor:
        """Each trajectory's return (undiscounted): ``[..., N]``."""
        return (self.rewards * self.mask).sum(-1)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """The discounted return from each step to its trajectory's end: ``[..., N, H]``."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(observations: Tensor, mask: Tensor) -> Tensor:
    """``[obs, obs^2, t, t^2, t^3, 1]`` per step (t = step / 100), zero on padding."""
    steps = observations.shape[-2]
    t = torch.arange(steps, dtype=observations.dtype) / FEATURE_TIME_SCALE
    t = t.expand(mask.shape)[..., None]
    ones = torch.ones_like(t)
    features = torch.cat([observations, observations**2, t, t**2, t**3, ones], dim=-1)
    return features * mask[..., None]


def fit_baseline(features: Tensor, returns: Tensor, reg: float) -> Tensor:
    """The baseline's values: ridge regression of the returns on the features, per batch
    (solved in float64; the ridge grows tenfold, up to five times, while the solve is not
    finite)."""
    flat = features.flatten(-3, -2).double()  # [..., N*H, F]
    target = returns.flatten(-2, -1).double()[..., None]
    xtx = flat.transpose(-1, -2) @ flat
    xty = flat.transpose(-1, -2) @ target
    eye = torch.eye(xtx.shape[-1], dtype=xtx.dtype)
    for _ in range(5):
        coeffs = torch.linalg.solve(xtx + reg * eye, xty)
        if bool(torch.isfinite(coeffs).all()):
            break
        reg *= 10
    values = (flat @ torch.nan_to_num(coeffs))[..., 0]
    return values.reshape(returns.shape).to(returns.dtype)


def step_weights(mask: Tensor) -> Tensor:
    """Each step's share of the batch's mean: 1 / (its trajectory's length x trajectories)."""
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)
    return mask / lengths / mask.shape[-2]


def advantages(rollouts: Rollouts, spec: RolloutPreprocessing) -> Tensor:
    """Returns-to-go less the fitted baseline (GAE with lambda 1), normalised over the
    batch's steps (mean 0, std 1), zero on padding: ``[..., N, H]``."""
    mask = rollouts.mask
    returns = discounted_returns(rollouts.rewards, mask, spec.gamma)
    values = fit_baseline(
        baseline_features(rollouts.observations, mask), returns, spec.baseline_reg
    )
    adv = (returns - values) * mask
    count = mask.sum((-2, -1), keepdim=True).clamp(min=1)
    mean = adv.sum((-2, -1), keepdim=True) / count
    var = (((adv - mean) * mask) ** 2).sum((-2, -1), keepdim=True) / count
    return (adv - mean) / (var.sqrt() + 1e-8) * mask


def support_set(rollouts: Rollouts, spec: RolloutPreprocessing) -> tuple[Tensor, Tensor]:
    """The inner step's support rows: ``x [..., N*H, D]`` observations and ``y [..., N*H,
    A + 1]`` actions with their weights (0 on padding)."""
    weights = advantages(rollouts, spec) * step_weights(rollouts.mask)
    x = rollouts.observations.flatten(-3, -2)
    y = torch.cat([rollouts.actions, weights[..., None]], dim=-1).flatten(-3, -2)
    return x, y


Policy = Callable[[Tensor], Tensor]  # observations [T, N, D] -> mean and log std [T, N, 2A]


def policy_of(model: nn.Module, params: Mapping[str, Tensor], batched: bool) -> Policy:
    """``params``' policy over ``[tasks, trajectories, D]`` observations: one parameter set
    for every task, or (``batched``) one per task, vmapped."""
    if not batched:
        return lambda obs: forward(model, params, obs)
    run = torch.func.vmap(lambda p, obs: forward(model, p, obs))
    return lambda obs: run(dict(params), obs)


@torch.no_grad()
def sample(
    policy: Policy,
    env: Environment,
    trajectories: int,
    horizon: int,
    generator: torch.Generator,
) -> Rollouts:
    """Roll ``policy`` out ``trajectories`` times per task of ``env`` for ``horizon`` steps,
    sampling its Gaussian actions; a trajectory ends when the environment says so (the
    steps after it are padding)."""
    obs = env.reset(trajectories, generator)
    alive = torch.ones(obs.shape[:-1], dtype=torch.bool)
    trace: dict[str, list[Tensor]] = {"obs": [], "act": [], "rew": [], "mask": []}
    for _ in range(horizon):
        mean, log_std = policy(obs).chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator)
        action = mean + torch.exp(log_std) * noise
        next_obs, reward, done = env.step(action)
        for key, value in zip(trace, (obs, action, reward, alive.float()), strict=True):
            trace[key].append(value)
        obs = torch.where(alive[..., None], next_obs, obs)
        alive = alive & ~done
    stack = {k: torch.stack(v, dim=-1 if k in ("rew", "mask") else -2) for k, v in trace.items()}
    return Rollouts(stack["obs"], stack["act"], stack["rew"] * stack["mask"], stack["mask"])
