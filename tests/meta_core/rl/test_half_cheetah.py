"""Half-cheetah: the batched physics against gymnasium's own HalfCheetah-v5 stepped from the
same state, the paper's two rewards, and the tasks and starts drawn."""

import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from meta_core.rl.config import HalfCheetahConfig
from meta_core.rl.environments import sample_environment
from meta_core.rl.half_cheetah import HalfCheetah, physics


def test_goals_are_drawn_as_the_paper():
    g = torch.Generator().manual_seed(0)
    vel = HalfCheetah.sample(HalfCheetahConfig(), 400, g)
    assert vel.goals.shape == (400,) and vel.goals.min() >= 0 and vel.goals.max() <= 2
    assert vel.goals.min() < 0.05 and vel.goals.max() > 1.95
    direction = HalfCheetah.sample(HalfCheetahConfig(goal="direction"), 400, g)
    assert set(direction.goals.tolist()) == {-1.0, 1.0}
    assert abs(float(direction.goals.mean())) < 0.15
    assert isinstance(sample_environment(HalfCheetahConfig(), 2, g), HalfCheetah)


def test_starts_are_gymnasiums_with_its_noise_and_repeat_with_the_seed():
    env = HalfCheetah(torch.tensor([1.0, 0.5]), HalfCheetahConfig())
    obs = env.reset(300, torch.Generator().manual_seed(1))
    assert obs.shape == (2, 300, 17) and obs.dtype == torch.float32
    qpos, qvel = env.state[..., 1:10], env.state[..., 10:]
    assert np.abs(qpos).max() <= 0.1 and np.abs(qpos).max() > 0.09  # U(-0.1, 0.1)
    assert qvel.std() == pytest.approx(0.1, rel=0.1)  # 0.1 N(0, 1)
    torch.testing.assert_close(obs, torch.from_numpy(env.state[..., 2:]).float())
    again = env.reset(300, torch.Generator().manual_seed(1))
    assert again.equal(obs)


@pytest.mark.parametrize("goal", ["velocity", "direction"])
def test_a_step_is_gymnasiums_and_the_reward_the_papers(goal):
    g = torch.Generator().manual_seed(2)
    env = HalfCheetah(torch.tensor([1.5, -1.0]), HalfCheetahConfig(goal=goal))
    env.reset(3, g)
    action = torch.randn(2, 3, 6, generator=g) * 1.5  # partly outside [-1, 1]
    reference = HalfCheetahEnv()
    reference.reset(seed=0)
    expected = []
    for t in range(2):
        for n in range(3):
            state = env.state[t, n]
            reference.set_state(state[1:10], state[10:19])
            clipped = np.clip(action[t, n].double().numpy(), -1, 1)
            obs, _, _, _, info = reference.step(clipped)
            v, cost = info["x_velocity"], 0.05 * float((clipped**2).sum())
            goal_value = float(env.goals[t])
            reward = -abs(v - goal_value) - cost if goal == "velocity" else goal_value * v - cost
            expected.append((obs, reward))
    obs, reward, done = env.step(action)
    assert obs.shape == (2, 3, 17) and reward.shape == (2, 3) and not done.any()
    for i, (ref_obs, ref_reward) in enumerate(expected):
        t, n = divmod(i, 3)
        np.testing.assert_allclose(obs[t, n].numpy(), ref_obs, rtol=1e-5, atol=1e-5)
        assert float(reward[t, n]) == pytest.approx(ref_reward, rel=1e-5, abs=1e-5)
    assert physics().dt == pytest.approx(0.05)  # frame skip 5 of 0.01 s
