"""Evaluation: query loss and accuracy after 0..S inner steps on fixed test tasks.

The protocol of ../shared/BENCHMARKS.md: 600 tasks from a fixed seed, mean with its 95%
confidence half-width (1.96 standard errors), compared with the MAML paper's two baselines:
"pretrained" (one network trained jointly on all tasks, then fine-tuned with the same steps)
and a random initialization. Adaptation is meta_core's one inner loop.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from meta_core.algorithms import choose_strategy
from meta_core.artifact import Artifact, load_artifact, update_evaluation
from meta_core.config import EvalConfig
from meta_core.inner_loop import LOSSES, InnerLoop, LearningRate, Params, TaskKind
from meta_core.networks import ArchSpec, build_network
from meta_core.scoring import adapt_and_score
from meta_core.tasks import Sinusoid, TaskBatch, TaskFamily, build_family

log = logging.getLogger(__name__)


def _task_curve(
    loop: InnerLoop, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
) -> tuple[Tensor, Tensor]:
    """One task's query loss and metric after 0..steps inner steps."""
    _, [(losses, metrics)] = adapt_and_score(
        loop, params, (sx, sy), [(qx, qy)], at=list(range(loop.steps + 1))
    )
    return losses, metrics


def adaptation_curve(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    kind: TaskKind,
    steps: int,
    lr: LearningRate,
    adapt_names: list[str] | None = None,
    chunk: int = 100,
    chunk_examples: int = 8000,
    strategy: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Per-task query loss and metric after 0..steps inner steps: two ``[T, steps + 1]``.

    Tasks go through in chunks of at most ``chunk`` tasks and about ``chunk_examples`` support
    + query examples, so memory stays bounded whatever the number of ways (100 tasks of 5-way
    1-shot, 25 of 20-way). ``strategy`` is as in training: ``auto`` runs a chunk's tasks one by
    one for a convolutional network on the CPU (vmap's grouped convolutions are several times
    slower there) and under ``vmap`` elsewhere."""
    params = {k: v.detach() for k, v in params.items()}
    if not isinstance(lr, float | int):
        lr = {k: v.detach() for k, v in lr.items()}
    device = next(iter(params.values())).device
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    strategy = choose_strategy(strategy, "conv4" if conv else "mlp", device)
    eager = strategy == "loop"
    loop = InnerLoop(model, kind, steps, lr, adapt_names, first_order=True, eager=eager)
    curve = partial(_task_curve, loop)
    fn: Callable[..., tuple[Tensor, Tensor]]
    if strategy == "vmap":
        fn = vmap(curve, in_dims=(None, 0, 0, 0, 0))
    else:

        def fn(p: Params, *tensors: Tensor) -> tuple[Tensor, Tensor]:
            pairs = [curve(p, *(t[i] for t in tensors)) for i in range(len(tensors[0]))]
            return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    per_task = batch.support_x.shape[1] + batch.query_x.shape[1]
    chunk = max(1, min(chunk, chunk_examples // per_task))
    losses, metrics = [], []
    with torch.no_grad():
        for i in range(0, len(batch), chunk):
            part = (
                batch.support_x[i : i + chunk],
                batch.support_y[i : i + chunk],
                batch.query_x[i : i + chunk],
                batch.query_y[i : i + chunk],
            )
            loss, met = fn(params, *part)
            losses.append(loss)
            metrics.append(met)
    return torch.cat(losses).float().cpu(), torch.cat(metrics).float().cpu()


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width (normal approximation)."""
    n = values.numel()
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def pretrain_jointly(
    model: nn.Module,
    spec: ArchSpec,
    family: TaskFamily,
    *,
    kind: TaskKind,
    iterations: int,
    meta_batch: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> Params:
    """The paper's "pretrained" baseline: one network regressed on all tasks' data at once."""
    params = {
        k: v.detach().clone().to(device).requires_grad_()
        for k, v in fresh_params(spec, seed).items()
    }
    opt = torch.optim.Adam(params.values(), lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = LOSSES[kind]
    for _ in range(iterations):
        b = family.sample(meta_batch, gen).to(device)
        x = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1)
        y = torch.cat([b.support_y, b.query_y], 1).flatten(0, 1)
        loss = loss_fn(functional_call(model, params, (x,)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


def fresh_params(spec: ArchSpec, seed: int) -> Params:
    """A random initialization of the architecture (PyTorch's default init) from ``seed``."""
    torch.manual_seed(seed)
    return {k: v.detach() for k, v in build_network(spec).named_parameters()}


Method = tuple[Params, LearningRate, list[str] | None]  # start, inner lr, adapted names (None: all)


def evaluate_artifact(
    directory: Path | str, cfg: EvalConfig, *, device: str = "cpu", plots: bool = True
) -> dict[str, Any]:
    """Evaluate an artifact on its family's test split; write report.json, plots, manifest."""
    directory = Path(directory)
    dev = torch.device(device)
    art = load_artifact(directory, dev)
    family = build_family(art.manifest.training.config.family).to(dev)
    # The baselines' inner lr: the one asked for, else the artifact's scalar one (no learned rates).
    base_lr = float(cfg.inner_lr) if cfg.inner_lr > 0 else art.manifest.inner_loop.lr
    methods = _methods(art, family, cfg, base_lr, dev)
    results: dict[str, dict[str, Any]] = {method: {} for method in methods}
    for shots in cfg.shots or [family.shots]:
        batch = _test_tasks(family, cfg, shots, dev)
        for method, start in methods.items():
            results[method][str(shots)] = _scores(art, start, batch, cfg, dev)
    report = _report(art, cfg, base_lr, results)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    update_evaluation(directory, {"protocol": report["protocol"], "results": results["maml"]})
    if plots:
        _plot(directory, report, art, family, methods, base_lr)
    return report


def _methods(
    art: Artifact, family: TaskFamily, cfg: EvalConfig, base_lr: float, dev: torch.device
) -> dict[str, Method]:
    """The meta-learned start (with its learned rates unless an lr is asked for) and the
    baselines ``cfg`` names, which adapt every parameter at ``base_lr``."""
    lr = float(cfg.inner_lr) if cfg.inner_lr > 0 else art.learning_rate()
    methods: dict[str, Method] = {"maml": (art.params, lr, art.adapt_names)}
    architecture = art.manifest.architecture
    if "random" in cfg.baselines:
        methods["random"] = (fresh_params(architecture, cfg.seed), base_lr, None)
    if "pretrained" in cfg.baselines:
        log.info("training the pretrained baseline for %d iterations", cfg.baseline_iterations)
        trained = art.manifest.training.config.train
        pretrained = pretrain_jointly(
            art.model,
            architecture,
            family,
            kind=art.task_kind,
            iterations=cfg.baseline_iterations,
            meta_batch=trained.meta_batch,
            lr=trained.outer_lr,
            seed=cfg.seed,
            device=dev,
        )
        methods["pretrained"] = (pretrained, base_lr, None)
    return methods


def _test_tasks(family: TaskFamily, cfg: EvalConfig, shots: int, dev: torch.device) -> TaskBatch:
    """``cfg.tasks`` test tasks of ``shots`` shots, the same ones for every method (one seed)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    return family.sample(cfg.tasks, gen, split="test", shots=shots).to(dev)


def _scores(
    art: Artifact, method: Method, batch: TaskBatch, cfg: EvalConfig, dev: torch.device
) -> dict[str, dict[str, float]]:
    """One method's mean query loss (and accuracy, for classification), each with its 95%
    half-width, after each of ``cfg.steps`` inner steps."""
    params, lr, names = method
    losses, metrics = adaptation_curve(
        art.model,
        {k: v.to(dev) for k, v in params.items()},
        batch,
        kind=art.task_kind,
        steps=max(cfg.steps),
        lr=lr,
        adapt_names=names,
        chunk=cfg.chunk,
    )
    row = {}
    for s in cfg.steps:
        mean, ci = mean_ci95(losses[:, s])
        entry = {"loss": mean, "loss_ci95": ci}
        if art.task_kind == "classification":
            acc, acc_ci = mean_ci95(metrics[:, s])
            entry |= {"accuracy": acc, "accuracy_ci95": acc_ci}
        row[str(s)] = entry
    return row


def _report(
    art: Artifact, cfg: EvalConfig, base_lr: float, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """report.json: what was evaluated, how, and the results (method -> shots -> steps)."""
    return {
        "artifact": {"name": art.name, "version": art.version},
        "protocol": {
            "tasks": cfg.tasks,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "inner_lr": base_lr,
            "learned_lr": art.manifest.inner_loop.learned_lr,
            "split": "test",
            "queries": "as the family's test split",
        },
        "baselines": {
            "pretrained_iterations": cfg.baseline_iterations
            if "pretrained" in cfg.baselines
            else None
        },
        "results": results,
    }


def _plot(
    directory: Path,
    report: dict[str, Any],
    art: Artifact,
    family: TaskFamily,
    methods: dict[str, Method],
    base_lr: float,
) -> None:
    """The training curves, loss against steps, and for sinusoids the paper's figure 2."""
    from meta_core import plots as plotting

    plotting.training_curves(directory)
    plotting.steps_plot(directory, report)
    if isinstance(family, Sinusoid):
        plotting.sinusoid_figure(directory, art, methods, base_lr)
