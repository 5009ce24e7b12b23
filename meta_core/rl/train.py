"""Meta-training a policy: each iteration draws a meta-batch of tasks, rolls the meta-policy
out in each, takes the inner step (:class:`meta_core.inner_loop.InnerLoop`, REINFORCE on
:func:`meta_core.rl.rollouts.support_set`), rolls the adapted policies out, and takes one
TRPO step on their surrogate (:mod:`meta_core.rl.trpo`). Every rollout of a meta-batch runs
at once: ``[tasks, trajectories]`` environments, one vmapped policy call per time step.
With ``inner_steps = 0`` the same loop trains the paper's "pretrained" baseline: one policy
for every task, by TRPO on its own rollouts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch
from torch.func import vmap

from meta_core.artifact import InnerLoopSpec, TrainingRecord, save_artifact
from meta_core.inner_loop import InnerLoop, Params
from meta_core.networks import GaussianMLPSpec, build_network
from meta_core.preprocessing import RolloutPreprocessing
from meta_core.rl.config import PolicyRunConfig
from meta_core.rl.environments import Environment, sample_environment
from meta_core.rl.rollouts import Rollouts, policy_of, sample, step_weights, support_set
from meta_core.rl.trpo import MetaBatch, meta_parameters, surrogate, trpo_step

log = logging.getLogger(__name__)


def architecture(cfg: PolicyRunConfig) -> GaussianMLPSpec:
    return GaussianMLPSpec(
        in_features=cfg.env.observation_size,
        hidden=list(cfg.policy.hidden),
        out_features=cfg.env.action_size,
        init_log_std=cfg.policy.init_log_std,
    )


def rollout_spec(cfg: PolicyRunConfig) -> RolloutPreprocessing:
    """What the manifest records of how rollouts become support rows (and the environment's
    horizon and action box)."""
    low, high = cfg.env.action_box
    return RolloutPreprocessing(
        gamma=cfg.adaptation.gamma,
        baseline_reg=cfg.adaptation.baseline_reg,
        horizon=cfg.env.horizon,
        action_low=low,
        action_high=high,
    )


def inner_loop(model: torch.nn.Module, cfg: PolicyRunConfig, steps: int | None = None) -> InnerLoop:
    a = cfg.adaptation
    steps = a.inner_steps if steps is None else steps
    return InnerLoop(model, "policy", steps, a.inner_lr, first_order=a.first_order)


def roll_out(
    loop: InnerLoop,
    params: Params,
    env: Environment,
    cfg: PolicyRunConfig,
    generator: torch.Generator,
    batched: bool,
) -> Rollouts:
    """``trajectories`` rollouts per task of ``params`` (one set, or one per task)."""
    policy = policy_of(loop.model, params, batched)
    return sample(policy, env, cfg.adaptation.trajectories, cfg.env.horizon, generator)


@dataclass(frozen=True)
class Collected:
    batch: MetaBatch
    returns_before: float  # the meta-policy's mean return (nan when nothing adapts)
    returns_after: float  # the adapted policies'
    env_steps: int


def collect(
    loop: InnerLoop,
    params: Params,
    env: Environment,
    cfg: PolicyRunConfig,
    generator: torch.Generator,
) -> Collected:
    """One meta-iteration's rollouts: the meta-policy's, its inner step per task, and the
    adapted policies' (the meta-policy's own, when nothing adapts)."""
    spec = rollout_spec(cfg)
    shared = {k: v.detach() for k, v in params.items()}
    support, before, steps = None, float("nan"), 0
    adapted, batched = shared, False
    if loop.steps > 0:
        train = roll_out(loop, shared, env, cfg, generator, batched=False)
        support = support_set(train, spec)
        adapted = vmap(loop.adapt, in_dims=(None, 0, 0))(shared, *support)
        adapted = {k: v.detach() for k, v in adapted.items()}
        before, batched, steps = float(train.returns().mean()), True, int(train.mask.sum())
    valid = roll_out(loop, adapted, env, cfg, generator, batched=batched)
    obs, y = support_set(valid, spec)
    with torch.no_grad():
        old_out = policy_of(loop.model, adapted, batched)(obs)
    batch = MetaBatch(
        support=support,
        obs=obs,
        actions=y[..., :-1],
        weights=y[..., -1],
        kl_weights=step_weights(valid.mask).flatten(-2),
        old_out=old_out,
    )
    return Collected(batch, before, float(valid.returns().mean()), steps + int(valid.mask.sum()))


@dataclass
class Run:
    """What a meta-training run made: the policy and its record."""

    params: Params
    spec: GaussianMLPSpec
    seconds: float
    env_steps: int
    history: list[dict[str, float]]


def meta_train(cfg: PolicyRunConfig, *, log_every: int | None = None) -> Run:
    """Meta-train (or, with ``inner_steps = 0``, pretrain) a policy for ``train.iterations``
    TRPO steps, logging every ``log_every`` (default ``train.log_every``)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    spec = architecture(cfg)
    model = build_network(spec)
    params = meta_parameters(model)
    loop = inner_loop(model, cfg)
    every = log_every or cfg.train.log_every
    start, env_steps, history = time.perf_counter(), 0, []
    for iteration in range(cfg.train.iterations):
        env = sample_environment(cfg.env, cfg.train.meta_batch, generator)
        collected = collect(loop, params, env, cfg, generator)
        objective = partial(surrogate, loop, batch=collected.batch)
        params, info = trpo_step(objective, params, cfg.trpo)
        env_steps += collected.env_steps
        history.append(
            {
                "iteration": iteration,
                "return_before": collected.returns_before,
                "return_after": collected.returns_after,
                "kl": info.kl,
                "step": info.accepted_fraction,
            }
        )
        if iteration % every == 0 or iteration == cfg.train.iterations - 1:
            log.info(
                "iteration %d: return %.2f before, %.2f after adapting; kl %.4f; %.0f env steps/s",
                iteration,
                collected.returns_before,
                collected.returns_after,
                info.kl,
                env_steps / max(time.perf_counter() - start, 1e-9),
            )
    return Run(params, spec, time.perf_counter() - start, env_steps, history)


def train_policy(cfg: PolicyRunConfig, out: Path) -> Path:
    """Meta-train a policy and write its artifact to ``out``; returns ``out``."""
    run = meta_train(cfg)
    return save_policy(cfg, out, run)


def save_policy(cfg: PolicyRunConfig, out: Path, run: Run) -> Path:
    """The run's artifact: the policy, its inner loop and rollout spec, and the run's record
    (with its learning curve and throughput)."""
    version = cfg.train.version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M%S")
    a = cfg.adaptation
    history, seconds, env_steps = run.history, run.seconds, run.env_steps
    last = history[-10:]
    summary = {
        "env": cfg.env.model_dump(),
        "env_steps": env_steps,
        "env_steps_per_second": round(env_steps / max(seconds, 1e-9), 1),
        "final_return_after": (
            sum(r["return_after"] for r in last) / len(last) if last else float("nan")
        ),
        "curve": [
            [r["iteration"], r["return_before"], r["return_after"]]
            for r in history[:: max(1, len(history) // 100)]
        ],
    }
    training = TrainingRecord(
        config=cfg,
        family=summary,
        iterations_done=len(history),
        seconds=round(seconds, 1),
        threads=torch.get_num_threads(),
        strategy="vmap",
    )
    return save_artifact(
        out,
        name=cfg.train.name,
        version=version,
        architecture=run.spec,
        task_kind="policy",
        params=run.params,
        lrs={},
        inner_loop=InnerLoopSpec(
            steps=max(a.inner_steps, 1),
            lr=a.inner_lr,
            later_lr=a.later_lr,
            first_order_training=a.first_order,
        ),
        preprocessing=rollout_spec(cfg),
        training=training,
    )
