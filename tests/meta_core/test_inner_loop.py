"""Meta-gradients against an independent reference: a hand-unrolled plain-PyTorch MAML."""

import pytest
import torch

from meta_core.algorithms import MetaLearner, first_order_at, multi_step_weights
from meta_core.config import AlgorithmConfig
from meta_core.inner_loop import InnerLoop, forward, mse_loss
from meta_core.networks import build_network
from meta_core.tasks import Sinusoid, TaskBatch

SPEC = {"type": "mlp", "in_features": 1, "hidden": [8], "out_features": 1}


def reference_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    """The MLP written by hand (no nn.Module, no functional_call)."""
    h = torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def reference_meta_loss(
    p: dict, batch: TaskBatch, *, steps: int, lr, adapt=None, first_order=False
) -> torch.Tensor:
    """Explicitly unrolled MAML with torch.autograd.grad, task by task."""
    total = 0.0
    for i in range(len(batch)):
        fast = dict(p)
        names = list(adapt or p)
        for s in range(steps):
            loss = mse_loss(reference_forward(fast, batch.support_x[i]), batch.support_y[i])
            grads = torch.autograd.grad(
                loss, [fast[k] for k in names], create_graph=not first_order
            )
            for k, g in zip(names, grads, strict=True):
                rate = lr if isinstance(lr, float) else lr[k][min(s, lr[k].shape[0] - 1)]
                fast[k] = fast[k] - rate * (g.detach() if first_order else g)
        total = total + mse_loss(reference_forward(fast, batch.query_x[i]), batch.query_y[i])
    return total / len(batch)


def make(algo: AlgorithmConfig) -> tuple[MetaLearner, TaskBatch]:
    torch.manual_seed(0)
    model = build_network(SPEC).double()
    learner = MetaLearner.create(model, "regression", algo)
    batch = Sinusoid(shots=5, queries=7).sample(4, torch.Generator().manual_seed(1))
    batch = TaskBatch(
        *(t.double() for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
    )
    return learner, batch


def grads_of(loss: torch.Tensor, learner: MetaLearner) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, learner.meta_parameters(), allow_unused=True))


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_unrolled_reference(strategy, first_order):
    learner, batch = make(AlgorithmConfig(inner_steps=3, inner_lr=0.05, first_order=first_order))
    ours = grads_of(learner.meta_loss(batch, strategy=strategy)[0], learner)
    ref = grads_of(
        reference_meta_loss(learner.params, batch, steps=3, lr=0.05, first_order=first_order),
        learner,
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_second_order_differs_from_first_order():
    learner, batch = make(AlgorithmConfig(inner_steps=2, inner_lr=0.1))
    second = grads_of(learner.meta_loss(batch)[0], learner)
    learner.algo.first_order = True
    first = grads_of(learner.meta_loss(batch)[0], learner)
    assert max((a - b).abs().max().item() for a, b in zip(second, first, strict=True)) > 1e-4


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_derivative_order_annealing_is_first_order_then_second(strategy):
    algo = AlgorithmConfig(inner_steps=2, inner_lr=0.1, first_order_iterations=3)
    learner, batch = make(algo)
    refs = {
        order: grads_of(
            reference_meta_loss(learner.params, batch, steps=2, lr=0.1, first_order=order),
            learner,
        )
        for order in (True, False)
    }
    for iteration, order in ((0, True), (2, True), (3, False), (100, False)):
        assert first_order_at(algo, iteration) is order
        loss = learner.meta_loss(batch, strategy=strategy, first_order=order)[0]
        for a, b in zip(grads_of(loss, learner), refs[order], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert first_order_at(AlgorithmConfig(first_order=True), 10**6)


def test_second_order_meta_gradient_matches_finite_differences():
    learner, batch = make(AlgorithmConfig(inner_steps=2, inner_lr=0.1))
    g = grads_of(learner.meta_loss(batch)[0], learner)
    direction = [torch.randn_like(p) for p in learner.params.values()]
    eps = 1e-6

    def loss_at(sign: float) -> float:
        shifted = {
            k: (v + sign * eps * d).detach()
            for (k, v), d in zip(learner.params.items(), direction, strict=True)
        }
        return (
            MetaLearner(learner.model, shifted, {}, "regression", learner.algo)
            .meta_loss(batch)[0]
            .item()
        )

    numeric = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = sum((a * d).sum() for a, d in zip(g, direction, strict=True)).item()
    assert numeric == pytest.approx(analytic, rel=1e-6)


def test_first_order_equals_gradient_with_inner_gradients_detached():
    learner, batch = make(AlgorithmConfig(inner_steps=2, inner_lr=0.1, first_order=True))
    ours = grads_of(learner.meta_loss(batch)[0], learner)
    # FOMAML: the meta-gradient is the query gradient at the adapted parameters.
    expected = [torch.zeros_like(p) for p in learner.params.values()]
    for i in range(len(batch)):
        fast = InnerLoop(learner.model, "regression", 2, 0.1).adapt(
            learner.params, batch.support_x[i], batch.support_y[i]
        )
        leaves = {k: v.detach().requires_grad_() for k, v in fast.items()}
        q = mse_loss(reference_forward(leaves, batch.query_x[i]), batch.query_y[i])
        for acc, gq in zip(expected, torch.autograd.grad(q, list(leaves.values())), strict=True):
            acc += gq / len(batch)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_anil_adapts_only_the_head_and_matches_reference():
    learner, batch = make(AlgorithmConfig(name="anil", inner_steps=2, inner_lr=0.1))
    loop = InnerLoop(learner.model, "regression", 2, 0.1, adapt_names=learner.adapt_names)
    fast = loop.adapt(learner.params, batch.support_x[0], batch.support_y[0])
    for k, v in learner.params.items():
        if k.startswith("body."):
            assert torch.equal(fast[k], v)
        else:
            assert not torch.allclose(fast[k], v)
    ours = grads_of(learner.meta_loss(batch)[0], learner)
    ref = grads_of(
        reference_meta_loss(
            learner.params, batch, steps=2, lr=0.1, adapt=["head.weight", "head.bias"]
        ),
        learner,
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["maml", "anil"])
def test_a_zeroed_head_is_no_meta_parameter_and_matches_reference(name):
    learner, batch = make(AlgorithmConfig(name=name, inner_steps=2, inner_lr=0.1, zero_head=True))
    head = {k: v for k, v in learner.params.items() if k.startswith("head.")}
    assert all(not v.requires_grad and not v.any() for v in head.values())
    assert {id(p) for p in learner.meta_parameters()} == {
        id(v) for k, v in learner.params.items() if k.startswith("body.")
    }
    # The reference: MAML unrolled by hand from the same start, the head's zeros a constant.
    # (Zeros it may differentiate the support loss by; the body's meta-gradient is unchanged.)
    start = learner.params | {k: v.clone().requires_grad_() for k, v in head.items()}
    adapt = list(head) if name == "anil" else None
    ref = reference_meta_loss(start, batch, steps=2, lr=0.1, adapt=adapt)
    ours = grads_of(learner.meta_loss(batch)[0], learner)
    for a, b in zip(ours, grads_of(ref, learner), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # Step 0 predicts nothing: zero outputs whatever the input.
    assert not forward(learner.model, learner.params, batch.query_x[0]).any()


@pytest.mark.parametrize(
    "algo",
    [
        AlgorithmConfig(name="metasgd", inner_steps=2, inner_lr=0.05),
        AlgorithmConfig(lslr=True, inner_steps=3, inner_lr=0.05),
    ],
)
def test_learned_learning_rates_match_reference_and_get_updated(algo):
    learner, batch = make(algo)
    assert set(learner.lrs) == set(learner.params)
    ours = grads_of(learner.meta_loss(batch)[0], learner)
    ref = grads_of(
        reference_meta_loss(learner.params, batch, steps=algo.inner_steps, lr=learner.lrs), learner
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    n = len(learner.params)
    assert all(g.abs().sum() > 0 for g in ours[n:])
    before = {k: v.detach().clone() for k, v in learner.lrs.items()}
    opt = torch.optim.Adam(learner.meta_parameters(), 1e-3)
    learner.meta_loss(batch)[0].backward()
    opt.step()
    assert all(not torch.equal(before[k], v) for k, v in learner.lrs.items())


def test_vmap_equals_loop_for_conv4_multi_step_loss():
    torch.manual_seed(0)
    spec = {
        "type": "conv4",
        "in_channels": 1,
        "image_size": 16,
        "hidden": 8,
        "out_features": 3,
        "norm": "layer",
    }
    learner = MetaLearner.create(
        build_network(spec).double(),
        "classification",
        AlgorithmConfig(inner_steps=2, inner_lr=0.3, lslr=True),
    )
    x = torch.randn(3, 6, 1, 16, 16, dtype=torch.float64)
    y = torch.arange(3).repeat(2).expand(3, 6)
    batch = TaskBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:])
    w = multi_step_weights(2, 10, 100).double()
    a = grads_of(learner.meta_loss(batch, strategy="vmap", step_weights=w)[0], learner)
    b = grads_of(learner.meta_loss(batch, strategy="loop", step_weights=w)[0], learner)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12)


def test_multi_step_weights_anneal_towards_the_last_step():
    start, end = multi_step_weights(5, 0, 1000), multi_step_weights(5, 1000, 1000)
    torch.testing.assert_close(start, torch.full((5,), 0.2))
    assert end.sum().item() == pytest.approx(1.0)
    assert end[-1] > 0.85 and (end[:-1] == pytest.approx(0.006))


def test_compiled_meta_loss_gives_the_same_meta_gradient():
    learner, batch = make(AlgorithmConfig(inner_steps=2, inner_lr=0.05))
    eager = grads_of(learner.meta_loss(batch)[0], learner)
    compiled = grads_of(torch.compile(learner.meta_loss)(batch)[0], learner)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "algo",
    [
        AlgorithmConfig(inner_steps=3, inner_lr=0.05),
        AlgorithmConfig(name="anil", inner_steps=2, inner_lr=0.05),
        AlgorithmConfig(lslr=True, inner_steps=3, inner_lr=0.05),
        AlgorithmConfig(name="metasgd", inner_steps=2, inner_lr=0.05),
    ],
)
def test_eager_first_order_steps_equal_the_transform(algo):
    learner, batch = make(algo)
    model, params = learner.model, learner.params
    x, y, qx, qy = (t[0] for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
    kw = {"adapt_names": learner.adapt_names, "first_order": True}
    steps, lr = algo.inner_steps, learner.inner_lr()
    func = InnerLoop(model, "regression", steps, lr, **kw).adapt(params, x, y)
    with torch.no_grad():  # as the service calls it
        served = InnerLoop(model, "regression", steps, lr, eager=True, **kw).adapt(params, x, y)
    eager = InnerLoop(model, "regression", steps, lr, eager=True, **kw).adapt(params, x, y)
    assert func.keys() == served.keys() == eager.keys()
    for k in func:
        torch.testing.assert_close(func[k], served[k], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(func[k], eager[k], rtol=1e-12, atol=1e-14)
    # The first-order meta-gradient through the eager steps is the transform's too.
    ours = grads_of(mse_loss(forward(model, eager, qx), qy), learner)
    ref = grads_of(mse_loss(forward(model, func, qx), qy), learner)
    for a, b in zip(ours, ref, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="first-order only"):
        InnerLoop(model, "regression", steps, lr, first_order=False, eager=True)


def test_policy_gradient_loss_is_reinforce():
    """Its gradient with respect to the mean and log std is the weighted score function
    (written out by hand), and its log-density is torch.distributions'."""
    from torch.distributions import Independent, Normal

    from meta_core.inner_loop import gaussian_log_prob, policy_gradient_loss

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    log_std = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    actions = torch.randn(5, 2, generator=g, dtype=torch.float64)
    weights = torch.randn(5, generator=g, dtype=torch.float64)
    out = torch.cat([mean, log_std.expand_as(mean)], -1)
    dist = Independent(Normal(mean, torch.exp(log_std)), 1)
    torch.testing.assert_close(gaussian_log_prob(out, actions), dist.log_prob(actions))
    loss = policy_gradient_loss(out, torch.cat([actions, weights[:, None]], -1))
    d_mean, d_log_std = torch.autograd.grad(loss, [mean, log_std])
    z = (actions - mean.detach()) / torch.exp(log_std.detach())
    torch.testing.assert_close(d_mean, -weights[:, None] * z / torch.exp(log_std.detach()))
    torch.testing.assert_close(d_log_std, -(weights[:, None] * (z**2 - 1)).sum(0))
