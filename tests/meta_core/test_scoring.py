"""The one scorer: losses and metrics at chosen steps equal a plain step-by-step computation."""

import pytest
import torch

from meta_core.inner_loop import InnerLoop, cross_entropy, forward, mse_loss
from meta_core.networks import MLPSpec, build_network
from meta_core.scoring import adapt_and_score, metric


def test_scores_at_chosen_steps_match_a_manual_walk():
    net = build_network(MLPSpec(in_features=1, hidden=[8], out_features=1)).double()
    params = dict(net.named_parameters())
    sx, qx = torch.randn(5, 1).double(), torch.randn(7, 1).double()
    sy, qy = torch.sin(sx), torch.sin(qx)
    loop = InnerLoop(net, "regression", 3, 0.1)
    fast, [(support, _), (query, query_mse)] = adapt_and_score(
        loop, params, (sx, sy), [(sx, sy), (qx, qy)], at=[0, 2, 3]
    )
    walk = [params, *loop.trajectory(params, sx, sy)]
    for i, step in enumerate([0, 2, 3]):
        assert support[i].item() == pytest.approx(mse_loss(forward(net, walk[step], sx), sy).item())
        assert query[i].item() == pytest.approx(mse_loss(forward(net, walk[step], qx), qy).item())
    torch.testing.assert_close(query_mse, query.detach())  # the regression metric is the MSE
    for k in fast:
        torch.testing.assert_close(fast[k], walk[-1][k])
    with pytest.raises(ValueError, match=r"steps \[4\] are beyond the loop's 3 steps"):
        adapt_and_score(loop, params, (sx, sy), [(qx, qy)], at=[4])


def test_classification_scores_only_the_tasks_classes():
    net = build_network(MLPSpec(in_features=2, hidden=[8], out_features=5))
    params = dict(net.named_parameters())
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    loop = InnerLoop(net, "classification", 1, 0.5)
    _, [(loss, accuracy)] = adapt_and_score(loop, params, (x, y), [(x, y)], at=[0], n_classes=3)
    logits = forward(net, params, x)[:, :3]
    assert loss[0].item() == pytest.approx(cross_entropy(logits, y).item())
    assert accuracy[0].item() == pytest.approx(metric("classification", logits, y).item())
