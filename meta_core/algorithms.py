"""Meta-learners: MAML (second and first order), ANIL, Meta-SGD and the MAML++ options.

They differ only in which parameters adapt, which learning rates are learned and how the query
losses are weighted; every one runs :meth:`meta_core.inner_loop.InnerLoop.trajectory`. A
meta-batch runs either vmapped over tasks (``torch.func.vmap``) or task by task; both call the
same :func:`task_loss` and give the same meta-gradient (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import vmap

from meta_core.config import AlgorithmConfig
from meta_core.inner_loop import InnerLoop, LearningRate, Params, TaskKind
from meta_core.networks import head_names
from meta_core.scoring import adapt_and_score
from meta_core.tasks.base import TaskBatch


def task_loss(
    loop: InnerLoop,
    params: Params,
    sx: Tensor,
    sy: Tensor,
    qx: Tensor,
    qy: Tensor,
    step_weights: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """One task's query loss after adapting on its support set, and the query metric.

    With ``step_weights`` (MAML++ multi-step loss) the loss is the weighted sum of the query
    losses after every inner step; otherwise it is the loss after the last step.
    """
    at = range(1, loop.steps + 1) if step_weights is not None else [loop.steps]
    _, [(losses, metrics)] = adapt_and_score(loop, params, (sx, sy), [(qx, qy)], at=list(at))
    loss = losses[-1] if step_weights is None else (losses * step_weights).sum()
    return loss, metrics[-1]


def multi_step_weights(steps: int, iteration: int, anneal_iterations: int) -> Tensor:
    """MAML++'s annealed per-step loss weights (Antoniou et al. 2019, section 4).

    They start uniform; the weights of the intermediate steps decay linearly to 0.03 / steps
    over ``anneal_iterations`` while the last step's weight grows to take up the rest.
    """
    w = torch.full((steps,), 1.0 / steps)
    if steps == 1:
        return w
    decay = 1.0 / steps / max(anneal_iterations, 1)
    floor = 0.03 / steps
    w[:-1] = torch.clamp(w[:-1] - iteration * decay, min=floor)
    w[-1] = min(1.0 / steps + iteration * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return w


@dataclass
class MetaLearner:
    """The meta-parameters (a network's initialization and any learned inner lrs)."""

    model: nn.Module
    params: Params
    lrs: Params
    kind: TaskKind
    algo: AlgorithmConfig

    @classmethod
    def create(cls, model: nn.Module, kind: TaskKind, algo: AlgorithmConfig) -> MetaLearner:
        params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
        if algo.zero_head:  # constant zeros: not meta-parameters
            params |= {k: torch.zeros_like(params[k]) for k in head_names(params)}
        names = adapted_names(params, algo.name)
        lrs: Params = {}
        for k in names if names is not None else params:
            if algo.name == "metasgd":  # Li et al. 2017: one learned rate per weight
                shape = (1, *params[k].shape)
            elif algo.lslr:  # MAML++: one learned rate per parameter tensor and step
                shape = (algo.inner_steps,) + (1,) * params[k].dim()
            else:
                continue
            lrs[k] = torch.full(
                shape,
                algo.inner_lr,
                device=params[k].device,
                dtype=params[k].dtype,
                requires_grad=True,
            )
        return cls(model, params, lrs, kind, algo)

    @property
    def adapt_names(self) -> list[str] | None:
        return adapted_names(self.params, self.algo.name)

    def meta_parameters(self) -> list[Tensor]:
        """What the outer loop learns: the initialization (but a zeroed head) and the rates."""
        return [*(v for v in self.params.values() if v.requires_grad), *self.lrs.values()]

    def inner_lr(self) -> LearningRate:
        return self.lrs if self.lrs else self.algo.inner_lr

    def meta_loss(
        self,
        batch: TaskBatch,
        *,
        strategy: str = "vmap",
        step_weights: Tensor | None = None,
        first_order: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mean query loss and metric over the meta-batch (Finn et al. 2017, eq. 3);
        ``first_order`` overrides the algorithm's (MAML++'s derivative-order annealing)."""
        # The learned rates reach the loop by closure: the meta-gradient flows to them as to
        # ``params``, which vmap takes unbatched (in_dims None).
        loop = InnerLoop(
            self.model,
            self.kind,
            self.algo.inner_steps,
            self.inner_lr(),
            adapt_names=self.adapt_names,
            first_order=self.algo.first_order if first_order is None else first_order,
        )
        fn = partial(task_loss, loop)
        tensors = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if strategy == "vmap":
            losses, metrics = vmap(fn, in_dims=(None, 0, 0, 0, 0, None))(
                self.params, *tensors, step_weights
            )
        elif strategy == "loop":
            sx, sy, qx, qy = tensors
            pairs = [
                fn(self.params, sx[i], sy[i], qx[i], qy[i], step_weights) for i in range(len(batch))
            ]
            losses = torch.stack([p[0] for p in pairs])
            metrics = torch.stack([p[1] for p in pairs])
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        return losses.mean(), metrics.mean()


def adapted_names(params: Params, algorithm: str) -> list[str] | None:
    """The parameters the inner loop changes: the head for ANIL, all (None) otherwise."""
    return head_names(params) if algorithm == "anil" else None


def choose_strategy(requested: str, arch_type: str, device: torch.device) -> str:
    """``auto``: per-task loop for Conv4 on the CPU, where vmap's grouped convolutions are
    slower (docs/benchmarks.md, "Meta-training throughput", W2); vmap everywhere else."""
    if requested != "auto":
        return requested
    return "loop" if arch_type == "conv4" and device.type == "cpu" else "vmap"


def cosine_lr(base: float, floor: float, iteration: int, total: int) -> float:
    """Cosine annealing of the outer lr from ``base`` to ``floor`` over ``total`` iterations."""
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(iteration, total) / total))


def first_order_at(algo: AlgorithmConfig, iteration: int) -> bool:
    """Whether the meta-gradient at ``iteration`` is first order: always with ``first_order``;
    else for the first ``first_order_iterations`` (MAML++'s derivative-order annealing,
    Antoniou et al. 2019, section 4: cheaper early iterations, then the full gradient)."""
    return algo.first_order or iteration < algo.first_order_iterations
