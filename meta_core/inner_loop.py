"""The inner loop, written once: gradient steps on a task's support set (Finn et al. 2017, eq. 1).

Meta-training (vmapped over tasks or task by task), evaluation and the service all build an
:class:`InnerLoop` and call its ``trajectory`` or ``adapt``. Parameters travel as a name -> tensor
dict through ``torch.func.functional_call``; the gradient is ``torch.func.grad``, so the same code
runs inside ``vmap`` and composes with ordinary autograd for the meta-gradient. Outside ``vmap``,
first-order callers (the service, per-task evaluation) may ask for ``eager`` gradients instead:
the same steps with ``torch.autograd.grad`` on detached leaves, which skips the transform's
per-call overhead.

Learning rates are either one float, or a dict name -> tensor of shape ``[S, *b]`` where ``b``
broadcasts against the parameter: step ``s`` uses row ``min(s, S - 1)``. That one form covers
MAML's fixed lr, Meta-SGD (``S = 1``, ``b`` = the parameter's shape) and MAML++'s per-layer
per-step rates (LSLR: ``b`` all ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
LearningRate = float | Mapping[str, Tensor]
TaskKind = Literal["regression", "classification", "policy"]


def forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Run ``model`` with ``params`` in place of its own (no copy, no state)."""
    out: Tensor = functional_call(model, dict(params), (x,))
    return out


def mse_loss(pred: Tensor, y: Tensor) -> Tensor:
    """Mean squared error; ``y`` has the prediction's shape."""
    return torch.mean((pred - y) ** 2)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of integer labels ``y``."""
    return nn.functional.cross_entropy(logits, y)


def gaussian_log_prob(out: Tensor, actions: Tensor) -> Tensor:
    """Log-density of ``actions`` under the diagonal Gaussians a policy network outputs (its
    mean and log std side by side, :class:`meta_core.networks.GaussianMLP`), summed over the
    action's dimensions."""
    mean, log_std = out.chunk(2, dim=-1)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def policy_gradient_loss(out: Tensor, y: Tensor) -> Tensor:
    """REINFORCE's surrogate loss (Williams 1992; the MAML paper's inner step for RL): the
    negative weighted sum of the actions' log-probabilities. Each row of ``y`` is an action
    and its weight, the step's advantage already normalised and divided by the number of
    steps and trajectories it averages over (:func:`meta_core.rl.rollouts.support_set`), so
    the gradient is the policy gradient itself and steps of ended trajectories weigh 0."""
    actions, weights = y[..., :-1], y[..., -1]
    return (weights * -gaussian_log_prob(out, actions)).sum()


LOSSES: dict[str, LossFn] = {
    "regression": mse_loss,
    "classification": cross_entropy,
    "policy": policy_gradient_loss,
}


def step_lr(lr: LearningRate, name: str, step: int) -> float | Tensor:
    """The learning rate of parameter ``name`` at inner step ``step``."""
    if isinstance(lr, float | int):
        return float(lr)
    rates = lr[name]
    return rates[min(step, rates.shape[0] - 1)]


@dataclass(frozen=True, eq=False)
class InnerLoop:
    """``steps`` SGD steps of the ``kind``'s loss on a support set.

    Only ``adapt_names`` change (all parameters when None; the head for ANIL). With
    ``first_order`` the inner gradients are detached, so the meta-gradient treats each step as
    the identity (first-order MAML); otherwise it flows through them (second order). ``eager``
    (first order only, not under ``vmap``) computes the same gradients with plain autograd.
    """

    model: nn.Module
    kind: TaskKind
    steps: int
    lr: LearningRate
    adapt_names: Sequence[str] | None = None
    first_order: bool = False
    eager: bool = False

    def __post_init__(self) -> None:
        if self.eager and not self.first_order:
            raise ValueError("eager inner gradients are first-order only")

    @property
    def loss_fn(self) -> LossFn:
        return LOSSES[self.kind]

    def trajectory(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Iterator[Params]:
        """Yield the parameters after each step on the support set ``(x, y)``."""
        model, loss_fn = self.model, self.loss_fn
        names = tuple(params) if self.adapt_names is None else tuple(self.adapt_names)
        fast = dict(params)

        def support_loss(adapted: Params, frozen: Params) -> Tensor:
            return loss_fn(functional_call(model, {**frozen, **adapted}, (x,)), y)

        gradient = _eager_grad(support_loss) if self.eager else grad(support_loss)
        for step in range(self.steps):
            adapted = {k: fast[k] for k in names}
            frozen = {k: v for k, v in fast.items() if k not in adapted}
            grads = gradient(adapted, frozen)
            for k in names:
                g = grads[k].detach() if self.first_order else grads[k]
                fast[k] = fast[k] - step_lr(self.lr, k, step) * g
            yield fast
            fast = dict(fast)

    def adapt(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Params:
        """The parameters after the last step (``params`` itself for zero steps)."""
        fast = dict(params)
        for fast in self.trajectory(params, x, y):  # noqa: B007 (the last step is the result)
            pass
        return fast


def _eager_grad(
    fn: Callable[[Params, Params], Tensor],
) -> Callable[[Params, Params], Params]:
    """``torch.func.grad(fn)`` for first-order use, by ``torch.autograd.grad`` on detached leaves
    (also under ``torch.no_grad``)."""

    def gradient(adapted: Params, frozen: Params) -> Params:
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in adapted.items()}
            frozen = {k: v.detach() for k, v in frozen.items()}
            grads = torch.autograd.grad(fn(leaves, frozen), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))

    return gradient
