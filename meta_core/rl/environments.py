"""What meta-training and evaluation ask of an environment: a batch of tasks, each run as
``trajectories`` copies at once, with every tensor ``[tasks, trajectories, ...]``. An
environment holds its copies' state: ``reset`` starts them, ``step`` moves them on."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from meta_core.rl.config import EnvConfig, HalfCheetahConfig


class Environment(Protocol):
    """One batch of tasks (``observation_size`` and ``action_size`` as its config's)."""

    def reset(self, trajectories: int, generator: torch.Generator) -> Tensor:
        """Start ``trajectories`` copies of every task: their first observations."""
        ...

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Apply ``action`` (``[T, N, A]``, as sampled: the environment clips it): the next
        observations, the rewards and whether each copy's episode has ended."""
        ...


class MissingDependency(RuntimeError):
    """An environment family whose packages are not installed."""


def sample_environment(config: EnvConfig, tasks: int, generator: torch.Generator) -> Environment:
    """``tasks`` tasks of ``config``'s family, drawn with ``generator``."""
    if isinstance(config, HalfCheetahConfig):
        try:  # MuJoCo only where it is used: the service never needs it
            from meta_core.rl.half_cheetah import HalfCheetah
        except ModuleNotFoundError as exc:
            raise MissingDependency(
                f"half-cheetah needs gymnasium and mujoco, and {exc.name} is not installed: "
                "pip install -e '.[rl]'"
            ) from None
        return HalfCheetah.sample(config, tasks, generator)
    from meta_core.rl.navigation import Navigation2D

    return Navigation2D.sample(config, tasks, generator)
