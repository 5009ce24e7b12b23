"""2D navigation, as the MAML paper (section 5.3): a point agent starts at the origin and must
reach a goal drawn uniformly from a square; the observation is its position, an action a
velocity clipped to a box, the reward the negative squared distance to the goal after the move;
an episode ends within ``success_radius`` of the goal or at the horizon. Vectorised over tasks
and trajectories: every tensor is ``[tasks, trajectories, ...]``."""

from __future__ import annotations

import torch
from torch import Tensor

from meta_core.rl.config import NavigationConfig


class Navigation2D:
    """The environment of one batch of tasks (``goals``: ``[tasks, 2]``)."""

    def __init__(self, goals: Tensor, config: NavigationConfig) -> None:
        self.goals = goals
        self.config = config
        self.position = torch.zeros(len(goals), 0, 2)

    @classmethod
    def sample(
        cls, config: NavigationConfig, tasks: int, generator: torch.Generator
    ) -> Navigation2D:
        """``tasks`` goals drawn uniformly from ``[goal_low, goal_high]^2``."""
        span = config.goal_high - config.goal_low
        goals = config.goal_low + span * torch.rand(tasks, 2, generator=generator)
        return cls(goals, config)

    def reset(self, trajectories: int, generator: torch.Generator | None = None) -> Tensor:
        """Every agent at the origin: ``[tasks, trajectories, 2]`` (nothing is random)."""
        self.position = torch.zeros(len(self.goals), trajectories, 2)
        return self.position

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The next positions, the rewards and whether each agent has reached its goal."""
        limit = self.config.max_action
        self.position = self.position + action.clamp(-limit, limit)
        distance2 = ((self.position - self.goals[:, None, :]) ** 2).sum(-1)
        reached = distance2 < self.config.success_radius**2
        return self.position, -distance2, reached
