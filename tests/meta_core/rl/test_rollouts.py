"""Rollouts: returns, the linear-feature baseline and the support rows against plain
references, and the inner step unchanged by padding."""

import numpy as np
import pytest
import torch

from meta_core.inner_loop import InnerLoop
from meta_core.networks import GaussianMLPSpec, build_network
from meta_core.preprocessing import RolloutPreprocessing
from meta_core.rl.rollouts import (
    Rollouts,
    advantages,
    baseline_features,
    discounted_returns,
    fit_baseline,
    policy_of,
    sample,
    support_set,
)

SPEC = RolloutPreprocessing(gamma=0.9)


def random_rollouts(n=4, horizon=6, seed=0, lengths=(6, 3, 5, 1)) -> Rollouts:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, horizon)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    obs = torch.randn(n, horizon, 2, generator=g) * mask[..., None]
    act = torch.randn(n, horizon, 2, generator=g) * mask[..., None]
    rew = torch.randn(n, horizon, generator=g) * mask
    return Rollouts(obs, act, rew, mask)


def test_discounted_returns_match_a_loop():
    r = random_rollouts()
    out = discounted_returns(r.rewards, r.mask, 0.9)
    for i in range(4):
        length = int(r.mask[i].sum())
        for t in range(length):
            expected = sum(0.9 ** (k - t) * float(r.rewards[i, k]) for k in range(t, length))
            assert float(out[i, t]) == pytest.approx(expected, abs=1e-5)
        assert out[i, length:].abs().sum() == 0


def test_baseline_is_ridge_regression_on_the_features():
    r = random_rollouts()
    returns = discounted_returns(r.rewards, r.mask, 0.9)
    features = baseline_features(r.observations, r.mask)
    values = fit_baseline(features, returns, 1e-5)
    keep = r.mask.reshape(-1) > 0
    f = features.reshape(-1, features.shape[-1])[keep].double().numpy()
    y = returns.reshape(-1)[keep].double().numpy()
    coeffs = np.linalg.solve(f.T @ f + 1e-5 * np.eye(f.shape[1]), f.T @ y)
    np.testing.assert_allclose(values.reshape(-1)[keep].numpy(), f @ coeffs, rtol=1e-4, atol=1e-5)
    t = features[0, :, 4]  # the time feature: step / 100
    torch.testing.assert_close(t, torch.arange(6.0) / 100)


def test_advantages_are_normalised_over_the_steps_taken():
    r = random_rollouts()
    adv = advantages(r, SPEC)
    taken = adv[r.mask > 0]
    assert float(taken.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(taken.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert adv[r.mask == 0].abs().sum() == 0


def test_support_weights_average_over_steps_then_trajectories():
    r = random_rollouts()
    x, y = support_set(r, SPEC)
    weights = y[:, -1].reshape(4, 6)
    adv = advantages(r, SPEC)
    lengths = r.mask.sum(-1, keepdim=True)
    torch.testing.assert_close(weights, adv / lengths / 4)
    torch.testing.assert_close(x.reshape(4, 6, 2), r.observations)


def test_padding_changes_nothing_of_the_inner_step():
    torch.manual_seed(0)
    model = build_network(GaussianMLPSpec(in_features=2, hidden=[8], out_features=2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    loop = InnerLoop(model, "policy", 1, 0.1, first_order=True, eager=True)
    r = random_rollouts()
    pad = lambda t: torch.cat([t, torch.zeros(*t.shape[:1], 4, *t.shape[2:])], dim=1)  # noqa: E731
    padded = Rollouts(*(pad(t) for t in (r.observations, r.actions, r.rewards, r.mask)))
    a = loop.adapt(params, *support_set(r, SPEC))
    b = loop.adapt(params, *support_set(padded, SPEC))
    for k in a:
        torch.testing.assert_close(a[k], b[k])


class Line:
    """Moves by the clipped action; "reached" once x passes 1.5."""

    def reset(self, trajectories, generator):
        self.pos = torch.zeros(2, trajectories, 2)
        return self.pos

    def step(self, action):
        self.pos = self.pos + action.clamp(-1, 1)
        return self.pos, -self.pos.sum(-1), self.pos[..., 0] > 1.5


def test_sample_ends_a_trajectory_at_its_goal():
    policy = lambda obs: torch.cat([torch.ones_like(obs), torch.full_like(obs, -30.0)], -1)  # noqa: E731
    r = sample(policy, Line(), 3, 5, torch.Generator().manual_seed(0))
    assert r.observations.shape == (2, 3, 5, 2) and r.rewards.shape == (2, 3, 5)
    torch.testing.assert_close(r.mask[0, 0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    assert r.rewards[r.mask == 0].abs().sum() == 0


def test_batched_policies_act_each_with_their_own_parameters():
    torch.manual_seed(0)
    model = build_network(GaussianMLPSpec(in_features=2, hidden=[4], out_features=2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    stacked = {k: torch.stack([v, v + 1]) for k, v in params.items()}
    obs = torch.randn(2, 3, 2)
    out = policy_of(model, stacked, batched=True)(obs)
    torch.testing.assert_close(out[0], model(obs[0]))
    shifted = {k: v + 1 for k, v in params.items()}
    torch.testing.assert_close(out[1], torch.func.functional_call(model, shifted, (obs[1],)))
