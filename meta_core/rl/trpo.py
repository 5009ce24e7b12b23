"""The outer loop: TRPO (Schulman et al. 2015) on the post-adaptation surrogate, as the MAML
paper meta-trains its policies (section 5.3): the meta-gradient and the KL's Hessian flow back
through each task's inner policy-gradient step (second order unless ``first_order``).

TRPO rather than a first-order method because it is what the paper (and the reference
implementations it is compared with) used: its trust region keeps a meta-update from moving
the post-adaptation policies by more than ``max_kl``, which is what makes one inner step of
a fixed lr safe to take from the meta-policy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from meta_core.inner_loop import InnerLoop, Params, forward, gaussian_log_prob
from meta_core.rl.config import TRPOConfig


def gaussian_kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians given as a policy network's outputs (mean and log std
    side by side), summed over the action's dimensions."""
    p_mean, p_log_std = p.chunk(2, dim=-1)
    q_mean, q_log_std = q.chunk(2, dim=-1)
    ratio = torch.exp(2 * (p_log_std - q_log_std))
    gap = (p_mean - q_mean) ** 2 * torch.exp(-2 * q_log_std)
    return (q_log_std - p_log_std + 0.5 * (ratio + gap - 1)).sum(-1)


@dataclass(frozen=True)
class MetaBatch:
    """One meta-iteration's data for ``T`` tasks: the support rows of the rollouts the
    meta-policy collected (None when nothing adapts), and the steps the adapted policies then
    collected (``obs``, ``actions``, their advantage ``weights`` and mean ``kl_weights``,
    and the adapted policies' outputs ``old_out`` when collected)."""

    support: tuple[Tensor, Tensor] | None
    obs: Tensor
    actions: Tensor
    weights: Tensor
    kl_weights: Tensor
    old_out: Tensor


def adapted_outputs(loop: InnerLoop, params: Params, batch: MetaBatch) -> Tensor:
    """Each task's adapted policy on its own collected observations: ``[T, rows, 2A]``."""
    if batch.support is None or loop.steps == 0:
        return forward(loop.model, params, batch.obs)

    def one(p: Params, sx: Tensor, sy: Tensor, obs: Tensor) -> Tensor:
        return forward(loop.model, loop.adapt(p, sx, sy), obs)

    out: Tensor = vmap(one, in_dims=(None, 0, 0, 0))(params, *batch.support, batch.obs)
    return out


def surrogate(loop: InnerLoop, params: Params, batch: MetaBatch) -> tuple[Tensor, Tensor]:
    """The meta-loss (the negative importance-weighted advantage of the adapted policies,
    averaged over tasks) and the mean KL from the policies that collected the data."""
    out = adapted_outputs(loop, params, batch)
    ratio = torch.exp(
        gaussian_log_prob(out, batch.actions) - gaussian_log_prob(batch.old_out, batch.actions)
    )
    loss = -(batch.weights * ratio).sum(-1).mean()
    kl = (batch.kl_weights * gaussian_kl(batch.old_out, out)).sum(-1).mean()
    return loss, kl


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int, tol: float = 1e-10
) -> Tensor:
    """An approximate solution of ``A x = b`` for symmetric positive definite ``A``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iterations):
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        new_rr = r @ r
        if new_rr < tol:
            break
        p, rr = r + (new_rr / rr) * p, new_rr
    return x


@dataclass(frozen=True)
class StepInfo:
    loss_before: float
    loss_after: float
    kl: float
    accepted_fraction: float  # of the full step (0: every line-search step was refused)


Objective = Callable[[Params], tuple[Tensor, Tensor]]


def trpo_step(objective: Objective, params: Params, cfg: TRPOConfig) -> tuple[Params, StepInfo]:
    """One TRPO update of ``params`` (leaves that require grad): the natural gradient by
    conjugate gradient on the KL's Hessian (with ``cg_damping``), scaled to the trust
    region's edge, then a backtracking line search that keeps the first step that lowers
    the loss within ``max_kl``."""
    names = list(params)
    leaves = [params[k] for k in names]
    loss, kl = objective(params)
    g = _flat(torch.autograd.grad(loss, leaves, retain_graph=True))
    grad_kl = _flat(torch.autograd.grad(kl, leaves, create_graph=True))

    def hvp(v: Tensor) -> Tensor:
        hv = _flat(torch.autograd.grad(grad_kl @ v, leaves, retain_graph=True))
        return hv.detach() + cfg.cg_damping * v

    direction = conjugate_gradient(hvp, g.detach(), cfg.cg_iterations)
    shs = 0.5 * (direction @ hvp(direction))
    full = direction / torch.sqrt(shs / cfg.max_kl).clamp(min=1e-12)
    old = _flat(leaves).detach()
    before = float(loss.detach())
    with torch.no_grad():
        for k in range(cfg.line_search_steps):
            fraction = cfg.line_search_backtrack**k
            candidate = _unflat(old - fraction * full, params)
            new_loss, new_kl = objective(candidate)
            if float(new_loss) < before and float(new_kl) < cfg.max_kl and math.isfinite(new_loss):
                out = {k: v.requires_grad_() for k, v in candidate.items()}
                return out, StepInfo(before, float(new_loss), float(new_kl), fraction)
    return params, StepInfo(before, before, 0.0, 0.0)


def _flat(tensors: tuple[Tensor, ...] | list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v).clone()
        i += v.numel()
    return out


def meta_parameters(model: nn.Module) -> Params:
    """A fresh copy of ``model``'s parameters as meta-parameters (leaves requiring grad)."""
    return {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
