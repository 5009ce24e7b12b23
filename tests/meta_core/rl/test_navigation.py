"""2D navigation as the MAML paper defines it."""

import torch

from meta_core.rl.config import NavigationConfig
from meta_core.rl.navigation import Navigation2D


def test_goals_are_drawn_in_the_square():
    env = Navigation2D.sample(NavigationConfig(), 500, torch.Generator().manual_seed(0))
    assert env.goals.shape == (500, 2)
    assert env.goals.min() >= -0.5 and env.goals.max() <= 0.5
    assert env.goals.min() < -0.45 and env.goals.max() > 0.45


def test_actions_are_clipped_and_the_reward_is_the_negative_squared_distance():
    env = Navigation2D(torch.tensor([[0.3, -0.2]]), NavigationConfig())
    start = env.reset(2, torch.Generator())
    assert start.shape == (1, 2, 2) and start.abs().sum() == 0
    action = torch.tensor([[[1.0, -0.05], [0.02, 0.03]]])
    position, reward, reached = env.step(action)
    torch.testing.assert_close(position, torch.tensor([[[0.1, -0.05], [0.02, 0.03]]]))
    expected = -torch.tensor([[0.2**2 + 0.15**2, 0.28**2 + 0.23**2]])
    torch.testing.assert_close(reward, expected)
    assert not reached.any()


def test_an_episode_ends_within_the_success_radius():
    env = Navigation2D(torch.tensor([[0.05, 0.0]]), NavigationConfig())
    env.reset(2, torch.Generator())
    _, _, reached = env.step(torch.tensor([[[0.045, 0.0], [0.03, 0.0]]]))
    assert reached.tolist() == [[True, False]]
    position, _, reached = env.step(torch.tensor([[[0.0, 0.0], [0.02, 0.0]]]))  # moves on
    torch.testing.assert_close(position[0, 1], torch.tensor([0.05, 0.0]))
    assert reached.tolist() == [[True, True]]
