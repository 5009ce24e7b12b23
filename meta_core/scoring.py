"""Adapt, then score: the one scorer used by meta-training, evaluation and the service.

A task's loss and metric (accuracy for classification, mean squared error for regression) on
some labelled examples, with the parameters after chosen steps of the inner loop (step 0 is
the meta-initialization itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from meta_core.inner_loop import (
    InnerLoop,
    Params,
    TaskKind,
    forward,
    mse_loss,
    policy_gradient_loss,
)

Examples = tuple[Tensor, Tensor]


def metric(kind: TaskKind, out: Tensor, y: Tensor) -> Tensor:
    """Accuracy for classification, mean squared error for regression; for a policy, its
    loss (the surrogate: a policy's return is measured in its environment, not here)."""
    if kind == "classification":
        return (out.argmax(-1) == y).float().mean()
    if kind == "policy":
        return policy_gradient_loss(out, y)
    return mse_loss(out, y)


def score(
    loop: InnerLoop,
    params: Mapping[str, Tensor],
    examples: Examples,
    *,
    n_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Loss (carrying the graph) and metric (detached) of ``params`` on ``(x, y)``. With
    ``n_classes``, only the first ``n_classes`` outputs count (a task with fewer classes than
    the network has output units)."""
    x, y = examples
    out = forward(loop.model, params, x)
    if n_classes is not None:
        out = out[..., :n_classes]
    return loop.loss_fn(out, y), metric(loop.kind, out.detach(), y)


def adapt_and_score(
    loop: InnerLoop,
    params: Mapping[str, Tensor],
    support: Examples,
    targets: Sequence[Examples],
    *,
    at: Sequence[int],
    n_classes: int | None = None,
) -> tuple[Params, list[tuple[Tensor, Tensor]]]:
    """Adapt on ``support``; score each of ``targets`` after each step in ``at`` (0 = before
    adapting). Returns the adapted parameters and, per target, ``[len(at)]`` losses and metrics.
    """
    wanted = set(at)
    scored: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def record(step: int, p: Mapping[str, Tensor]) -> None:
        if step in wanted:
            scored[step] = [score(loop, p, t, n_classes=n_classes) for t in targets]

    record(0, params)
    fast = dict(params)
    for step, fast in enumerate(loop.trajectory(params, *support), start=1):  # noqa: B007
        record(step, fast)
    missing = wanted - set(scored)
    if missing:
        raise ValueError(f"steps {sorted(missing)} are beyond the loop's {loop.steps} steps")
    results = []
    for i in range(len(targets)):
        losses = torch.stack([scored[s][i][0] for s in at])
        metrics = torch.stack([scored[s][i][1] for s in at])
        results.append((losses, metrics))
    return fast, results
