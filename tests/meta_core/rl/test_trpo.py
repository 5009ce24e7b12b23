"""The policy meta-gradient and the KL's Hessian-vector products against an independent
reference: a hand-written Gaussian policy, torch.distributions' log-densities and KL, and the
inner step unrolled task by task with plain autograd (float64)."""

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from meta_core.inner_loop import InnerLoop
from meta_core.networks import GaussianMLPSpec, build_network
from meta_core.rl.config import TRPOConfig
from meta_core.rl.trpo import (
    MetaBatch,
    adapted_outputs,
    conjugate_gradient,
    gaussian_kl,
    meta_parameters,
    surrogate,
    trpo_step,
)

SPEC = GaussianMLPSpec(in_features=2, hidden=[6, 5], out_features=2, init_log_std=-0.3)
LR = 0.3


def reference_policy(p: dict, obs: torch.Tensor) -> Independent:
    """The policy written by hand: tanh layers, a linear mean, a free log std."""
    h = torch.tanh(obs @ p["body.0.weight"].T + p["body.0.bias"])
    h = torch.tanh(h @ p["body.2.weight"].T + p["body.2.bias"])
    mean = h @ p["head.weight"].T + p["head.bias"]
    return Independent(Normal(mean, torch.exp(p["log_std"]).expand_as(mean)), 1)


def reference_objective(p: dict, batch: MetaBatch, first_order: bool = False):
    """MAML's TRPO surrogate and KL, task by task: one REINFORCE step with autograd.grad."""
    sx, sy = batch.support
    losses, kls = [], []
    for i in range(len(sx)):
        actions, weights = sy[i, :, :-1], sy[i, :, -1]
        inner = -(weights * reference_policy(p, sx[i]).log_prob(actions)).sum()
        grads = torch.autograd.grad(inner, list(p.values()), create_graph=not first_order)
        fast = {
            k: v - LR * (g.detach() if first_order else g)
            for (k, v), g in zip(p.items(), grads, strict=True)
        }
        new = reference_policy(fast, batch.obs[i])
        old_mean, old_log_std = batch.old_out[i].chunk(2, dim=-1)
        old = Independent(Normal(old_mean, torch.exp(old_log_std)), 1)
        ratio = torch.exp(new.log_prob(batch.actions[i]) - old.log_prob(batch.actions[i]))
        losses.append(-(batch.weights[i] * ratio).sum())
        kls.append((batch.kl_weights[i] * kl_divergence(old, new)).sum())
    return torch.stack(losses).mean(), torch.stack(kls).mean()


def make_batch(model, params, loop, tasks=3, rows=7, seed=0) -> MetaBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, rows, 2, generator=g, dtype=torch.float64)
    sy = torch.randn(tasks, rows, 3, generator=g, dtype=torch.float64) / rows
    obs = torch.randn(tasks, rows, 2, generator=g, dtype=torch.float64)
    actions = torch.randn(tasks, rows, 2, generator=g, dtype=torch.float64)
    weights = torch.randn(tasks, rows, generator=g, dtype=torch.float64) / rows
    kl_weights = torch.full((tasks, rows), 1.0 / rows, dtype=torch.float64)
    # The data "collected" by the adapted policies at params, plus a shift, so that the KL's
    # gradient is not zero and the importance ratios are not one.
    batch = MetaBatch((sx, sy), obs, actions, weights, kl_weights, torch.zeros(tasks, rows, 4))
    with torch.no_grad():
        out = adapted_outputs(loop, {k: v.detach() for k, v in params.items()}, batch)
    shifted = out + 0.05 * torch.randn(out.shape, generator=g, dtype=torch.float64)
    return MetaBatch((sx, sy), obs, actions, weights, kl_weights, shifted)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = build_network(SPEC).double()
    params = meta_parameters(model)
    return model, params


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_and_kl_match_the_reference(setup, first_order):
    model, params = setup
    loop = InnerLoop(model, "policy", 1, LR, first_order=first_order)
    batch = make_batch(model, params, loop)
    leaves = list(params.values())
    loss, kl = surrogate(loop, params, batch)
    ref_loss, ref_kl = reference_objective(params, batch, first_order)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kl, ref_kl, rtol=1e-10, atol=1e-12)
    ours = torch.autograd.grad(loss, leaves)
    theirs = torch.autograd.grad(ref_loss, leaves)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_second_order_term_is_real(setup):
    """The second-order meta-gradient differs from the first-order one (the test above is not
    comparing two copies of the first-order gradient)."""
    model, params = setup
    full = InnerLoop(model, "policy", 1, LR)
    batch = make_batch(model, params, full)
    fo = InnerLoop(model, "policy", 1, LR, first_order=True)
    leaves = list(params.values())
    g2 = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(surrogate(full, params, batch)[0], leaves)]
    )
    g1 = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(surrogate(fo, params, batch)[0], leaves)]
    )
    assert (g2 - g1).norm() > 1e-3 * g2.norm()


def test_kl_hessian_vector_product_matches_the_reference(setup):
    model, params = setup
    loop = InnerLoop(model, "policy", 1, LR)
    batch = make_batch(model, params, loop)
    leaves = list(params.values())
    v = [torch.randn_like(p) for p in leaves]

    def hvp(kl):
        g = torch.autograd.grad(kl, leaves, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(g, v, strict=True))
        return torch.autograd.grad(dot, leaves)

    ours = hvp(surrogate(loop, params, batch)[1])
    theirs = hvp(reference_objective(params, batch)[1])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_meta_gradient_matches_finite_differences(setup):
    """The whole second-order meta-gradient, along a random direction, against central
    differences of the meta-loss (the inner step re-run at each point)."""
    model, params = setup
    loop = InnerLoop(model, "policy", 1, LR)
    batch = make_batch(model, params, loop)
    leaves = list(params.values())
    grads = torch.autograd.grad(surrogate(loop, params, batch)[0], leaves)
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    analytic = sum((g * direction[k]).sum() for g, k in zip(grads, params, strict=True))
    eps = 1e-5
    with torch.no_grad():
        plus = {k: v + eps * direction[k] for k, v in params.items()}
        minus = {k: v - eps * direction[k] for k, v in params.items()}
        numeric = (surrogate(loop, plus, batch)[0] - surrogate(loop, minus, batch)[0]) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    dist = lambda o: Independent(Normal(o[:, :3], torch.exp(o[:, 3:])), 1)  # noqa: E731
    torch.testing.assert_close(gaussian_kl(p, q), kl_divergence(dist(p), dist(q)))


def test_conjugate_gradient_solves_a_positive_definite_system():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a = m @ m.T + 8 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def test_trpo_step_lowers_the_loss_within_the_trust_region(setup):
    model, params = setup
    loop = InnerLoop(model, "policy", 1, LR)
    batch = make_batch(model, params, loop)
    cfg = TRPOConfig(max_kl=0.01)
    objective = lambda p: surrogate(loop, p, batch)  # noqa: E731
    new, info = trpo_step(objective, params, cfg)
    assert info.accepted_fraction > 0
    with torch.no_grad():
        loss, _ = objective(new)
    assert float(loss) == pytest.approx(info.loss_after)
    assert info.loss_after < info.loss_before
    assert info.kl < cfg.max_kl
