"""Half-cheetah, as the MAML paper's locomotion tasks (section 5.3): gymnasium's HalfCheetah-v5
(its MuJoCo model, frame skip, reset noise and observation: the joints' positions but the
torso's x, and every velocity) with the task in the reward. ``velocity``: run at a goal
speed, reward ``-|v - goal| - ctrl_cost ||a||^2``; ``direction``: run forward or backward,
``dir * v - ctrl_cost ||a||^2``; ``v`` the torso's forward velocity over the step, ``a`` the
action clipped to the actuators' range. No episode ends before the horizon.

Every copy of every task is stepped by one call of ``mujoco.rollout`` (in C, on a pool of
``torch.get_num_threads()`` threads), the policy acting between calls."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import mujoco
import numpy as np
import torch
from mujoco import rollout
from torch import Tensor

from meta_core.rl.config import HalfCheetahConfig

STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS  # time, qpos, qvel (the model has no activations)


@dataclass(frozen=True)
class Physics:
    model: mujoco.MjModel
    frame_skip: int
    dt: float  # seconds per step: the model's timestep x frame_skip
    reset_noise: float
    init_qpos: np.ndarray
    init_qvel: np.ndarray


@cache
def physics() -> Physics:
    """gymnasium's HalfCheetah-v5, read once."""
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    env = HalfCheetahEnv()
    physics = Physics(
        env.model,
        env.frame_skip,
        float(env.dt),
        float(env._reset_noise_scale),
        env.init_qpos.copy(),
        env.init_qvel.copy(),
    )
    env.close()  # type: ignore[no-untyped-call]
    return physics


@cache
def scratch(threads: int) -> list[mujoco.MjData]:
    """One scratch ``MjData`` per rollout thread."""
    return [mujoco.MjData(physics().model) for _ in range(threads)]


class HalfCheetah:
    """One batch of tasks: ``goals [tasks]``, target velocities or directions (+1 / -1)."""

    def __init__(self, goals: Tensor, config: HalfCheetahConfig) -> None:
        self.goals = goals
        self.config = config
        self.state = np.zeros((len(goals), 0, mujoco.mj_stateSize(physics().model, STATE)))

    @classmethod
    def sample(
        cls, config: HalfCheetahConfig, tasks: int, generator: torch.Generator
    ) -> HalfCheetah:
        """Velocities uniform in ``[velocity_low, velocity_high]``, or directions +1 or -1
        with even odds."""
        if config.goal == "direction":
            goals = torch.randint(0, 2, (tasks,), generator=generator).float() * 2 - 1
        else:
            span = config.velocity_high - config.velocity_low
            goals = config.velocity_low + span * torch.rand(tasks, generator=generator)
        return cls(goals, config)

    def reset(self, trajectories: int, generator: torch.Generator) -> Tensor:
        """Every copy at gymnasium's start: the initial pose with positions perturbed by
        ``U(-noise, noise)`` and velocities by ``noise * N(0, 1)``."""
        p = physics()
        shape = (len(self.goals), trajectories)
        uniform = torch.rand(*shape, p.model.nq, generator=generator, dtype=torch.float64)
        normal = torch.randn(*shape, p.model.nv, generator=generator, dtype=torch.float64)
        qpos = p.init_qpos + (uniform.numpy() * 2 - 1) * p.reset_noise
        qvel = p.init_qvel + normal.numpy() * p.reset_noise
        self.state = np.concatenate([np.zeros((*shape, 1)), qpos, qvel], -1)
        return self.observations()

    def observations(self) -> Tensor:
        return torch.from_numpy(self.state[..., 2:]).float()  # qpos[1:], qvel (skip time, x)

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every copy ``frame_skip`` physics steps on, its action held."""
        p = physics()
        clipped = action.clamp(*self.config.action_box)
        flat = self.state.reshape(-1, self.state.shape[-1])
        control = clipped.double().numpy().reshape(len(flat), 1, -1)
        threads = max(torch.get_num_threads(), 1)
        # A pool per step: an idle pool's threads spin, and would slow torch's between steps.
        with rollout.Rollout(nthread=threads) as runner:
            states, _ = runner.rollout(
                p.model,
                scratch(threads),
                flat,
                np.repeat(control, p.frame_skip, axis=1),
                nstep=p.frame_skip,
            )
        before = self.state[..., 1]
        self.state = states[:, -1].reshape(self.state.shape)
        velocity = torch.from_numpy((self.state[..., 1] - before) / p.dt).float()
        cost = self.config.ctrl_cost * (clipped**2).sum(-1)
        goal = self.goals[:, None]
        if self.config.goal == "direction":
            reward = goal * velocity - cost
        else:
            reward = -(velocity - goal).abs() - cost
        return self.observations(), reward, torch.zeros(reward.shape, dtype=torch.bool)
