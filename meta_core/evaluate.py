"""Evaluation: query loss and accuracy after 0..S inner steps on fixed test tasks.

The protocol of ../shared/BENCHMARKS.md: 600 tasks from a fixed seed, mean with its 95%
confidence half-width (1.96 standard errors), compared with the MAML paper's two baselines:
"pretrained" (one network trained jointly on all tasks, then fine-tuned with the same steps)
and a random initialization. Adaptation is meta_core's one inner loop.

Classification families may also ask for two baselines fitted on each task's support inputs,
flattened (a text family's frozen embeddings, an image family's pixels): "centroid" (nearest
class centroid by cosine similarity) and "logreg" (L2-penalised multinomial logistic
regression). They take no inner steps, so where a network method's entry has one row per step,
theirs has one row named "fit".

The report's ``results[method][key][step]`` holds ``loss``, ``loss_ci95`` and, for
classification, ``accuracy`` and ``accuracy_ci95``; ``step`` is ``str(s)`` for each of
``eval.steps``, or ``"fit"`` for a fitted baseline. ``key`` is ``str(shots)``, or, when
``eval.ways`` asks for N-way tasks, ``f"{ways}-way {shots}-shot"``: every method then counts
only the network's first ``ways`` outputs (as the service serves a task with fewer classes).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from meta_core.algorithms import choose_strategy
from meta_core.artifact import Artifact, load_artifact, update_evaluation
from meta_core.config import Config, EvalConfig
from meta_core.inner_loop import LOSSES, InnerLoop, LearningRate, Params, TaskKind, cross_entropy
from meta_core.networks import ArchSpec, build_network
from meta_core.scoring import adapt_and_score, metric
from meta_core.tasks import NWayKShot, Sinusoid, TaskBatch, TaskFamily, build_family

log = logging.getLogger(__name__)


CENTROID_TEMPERATURE = 10.0  # the centroid baseline's loss: cross-entropy of softmax(10 cos)
LOGREG_C = 1.0  # the logreg baseline's inverse penalty, scikit-learn's default C


def _task_curve(
    loop: InnerLoop,
    n_classes: int | None,
    params: Params,
    sx: Tensor,
    sy: Tensor,
    qx: Tensor,
    qy: Tensor,
) -> tuple[Tensor, Tensor]:
    """One task's query loss and metric after 0..steps inner steps (only the first
    ``n_classes`` outputs counting, if given)."""
    _, [(losses, metrics)] = adapt_and_score(
        loop, params, (sx, sy), [(qx, qy)], at=list(range(loop.steps + 1)), n_classes=n_classes
    )
    return losses, metrics


def _chunks(batch: TaskBatch, chunk: int, chunk_examples: int) -> Iterator[TaskBatch]:
    """``batch`` in pieces of at most ``chunk`` tasks and about ``chunk_examples`` support +
    query examples, so memory stays bounded whatever the number of ways."""
    per_task = batch.support_x.shape[1] + batch.query_x.shape[1]
    size = max(1, min(chunk, chunk_examples // per_task))
    for i in range(0, len(batch), size):
        yield TaskBatch(
            batch.support_x[i : i + size],
            batch.support_y[i : i + size],
            batch.query_x[i : i + size],
            batch.query_y[i : i + size],
        )


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
    n_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-task query loss and metric after 0..steps inner steps: two ``[T, steps + 1]``.

    Tasks go through in chunks of at most ``chunk`` tasks and about ``chunk_examples`` support
    + query examples, so memory stays bounded whatever the number of ways (100 tasks of 5-way
    1-shot, 25 of 20-way). ``strategy`` is as in training: ``auto`` runs a chunk's tasks one by
    one for a convolutional network on the CPU (vmap's grouped convolutions are several times
    slower there) and under ``vmap`` elsewhere. With ``n_classes``, only the network's first
    ``n_classes`` outputs are scored (tasks with fewer classes than it has outputs)."""
    params = {k: v.detach() for k, v in params.items()}
    if not isinstance(lr, float | int):
        lr = {k: v.detach() for k, v in lr.items()}
    device = next(iter(params.values())).device
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    strategy = choose_strategy(strategy, "conv4" if conv else "mlp", device)
    eager = strategy == "loop"
    loop = InnerLoop(model, kind, steps, lr, adapt_names, first_order=True, eager=eager)
    curve = partial(_task_curve, loop, n_classes)
    fn: Callable[..., tuple[Tensor, Tensor]]
    if strategy == "vmap":
        fn = vmap(curve, in_dims=(None, 0, 0, 0, 0))
    else:

        def fn(p: Params, *tensors: Tensor) -> tuple[Tensor, Tensor]:
            pairs = [curve(p, *(t[i] for t in tensors)) for i in range(len(tensors[0]))]
            return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    losses, metrics = [], []
    with torch.no_grad():
        for part in _chunks(batch, chunk, chunk_examples):
            loss, met = fn(params, part.support_x, part.support_y, part.query_x, part.query_y)
            losses.append(loss)
            metrics.append(met)
    return torch.cat(losses).float().cpu(), torch.cat(metrics).float().cpu()


def centroid_logits(
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    n_classes: int,
    *,
    temperature: float = CENTROID_TEMPERATURE,
) -> Tensor:
    """Nearest class centroid by cosine similarity, for tasks ``[T, N, D]``: the support rows
    are normalised, averaged per class, the means normalised; a query's logits are its
    normalised row's cosine with each centroid times ``temperature``, ``[T, Nq, n_classes]``.

    Its accuracy is what matters. The loss reported for it is the cross-entropy of
    ``softmax(10 * cosine)``: a fixed temperature, nothing fitted, so comparable only between
    centroid rows."""
    one_hot = F.one_hot(support_y, n_classes).to(support_x.dtype)  # [T, N, C]
    sums = one_hot.transpose(1, 2) @ F.normalize(support_x, dim=-1)  # [T, C, D]
    means = sums / one_hot.sum(1).unsqueeze(-1)
    cosine = F.normalize(query_x, dim=-1) @ F.normalize(means, dim=-1).transpose(1, 2)
    return temperature * cosine


def logreg_logits(
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    n_classes: int,
    *,
    c: float = LOGREG_C,
    tol: float = 1e-6,
    max_iter: int = 1000,
) -> Tensor:
    """Multinomial logistic regression fitted on each task's support set alone, for tasks
    ``[T, N, D]``; the query logits ``[T, Nq, n_classes]``.

    Per task it minimises ``sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 c)`` (``W`` is
    ``[D, n_classes]``, the bias ``b`` unpenalised): scikit-learn's
    ``LogisticRegression(C=c)`` objective divided by ``c``, so the same fit for 3 or more
    classes (for 2, scikit-learn fits one sigmoid's weights, which this matches at ``C=2c``).
    Full-batch L-BFGS with a strong-Wolfe line search over all the tasks at once (their
    objectives are independent, so the sum's minimum is each task's), until no gradient entry
    exceeds ``tol``. Two exact reparametrisations keep it small: rows are centred on the
    support mean (the unpenalised bias absorbs the shift) and written in a basis of the
    centred support rows' span (``X^T = QR``; the minimising ``W`` lies there), so a task has
    ``min(N, D)`` features. No standardisation (the text family's rows are unit vectors)."""
    mean = support_x.mean(1, keepdim=True)
    q: Tensor
    r: Tensor
    q, r = torch.linalg.qr((support_x - mean).transpose(1, 2))  # [T, D, m], [T, m, N]
    z, zq = r.transpose(1, 2), (query_x - mean) @ q
    w = z.new_zeros(z.shape[0], z.shape[2], n_classes).requires_grad_()
    b = z.new_zeros(z.shape[0], 1, n_classes).requires_grad_()
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        opt.zero_grad()
        ce = F.cross_entropy((z @ w + b).flatten(0, 1), support_y.flatten(), reduction="sum")
        loss = ce + 0.5 / c * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
        objective()  # the gradient at the final point
    worst = max(float(g.abs().max()) for g in (w.grad, b.grad) if g is not None)
    if worst > 10 * tol:
        log.warning("logreg: gradient entry %.2e after %d L-BFGS iterations", worst, max_iter)
    return (zq @ w + b).detach()


FITTED: dict[str, Callable[[Tensor, Tensor, Tensor, int], Tensor]] = {
    "centroid": centroid_logits,
    "logreg": logreg_logits,
}


def fitted_curve(
    method: str,
    batch: TaskBatch,
    n_classes: int,
    *,
    chunk: int = 100,
    chunk_examples: int = 8000,
) -> tuple[Tensor, Tensor]:
    """Per-task query cross-entropy and accuracy, two ``[T]``, of a baseline of
    :data:`FITTED` fitted on each task's support inputs (flattened, in float64)."""
    fit = FITTED[method]
    per_task = vmap(lambda out, y: (cross_entropy(out, y), metric("classification", out, y)))
    losses, accuracies = [], []
    for part in _chunks(batch, chunk, chunk_examples):
        sx, qx = (x.flatten(2).to(torch.float64) for x in (part.support_x, part.query_x))
        loss, accuracy = per_task(fit(sx, part.support_y, qx, n_classes), part.query_y)
        losses.append(loss)
        accuracies.append(accuracy)
    return torch.cat(losses).float().cpu(), torch.cat(accuracies).float().cpu()


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
    """Evaluate an artifact on its family's test split (or ``cfg.split``); write report.json,
    plots and the manifest's evaluation (another split: report-<split>.json only)."""
    directory = Path(directory)
    dev = torch.device(device)
    art = load_artifact(directory, dev)
    run = art.manifest.training.config
    if not isinstance(run, Config):
        raise ValueError(f"{directory} is a policy: meta_core.rl.evaluate evaluates it")
    family = build_family(run.family).to(dev)
    _check_request(family, cfg)
    # The baselines' inner lr: the one asked for, else the artifact's scalar one (no learned rates).
    base_lr = float(cfg.inner_lr) if cfg.inner_lr > 0 else art.manifest.inner_loop.lr
    methods = _methods(art, family, cfg, base_lr, dev)
    fitted = [b for b in cfg.baselines if b in FITTED]
    results: dict[str, dict[str, Any]] = {method: {} for method in [*methods, *fitted]}
    all_ways: list[int | None] = [*cfg.ways] or [None]
    for ways in all_ways:
        for shots in cfg.shots or [family.shots]:
            key = str(shots) if ways is None else f"{ways}-way {shots}-shot"
            batch = _test_tasks(family, cfg, shots, ways, dev)
            for method, start in methods.items():
                results[method][key] = _scores(art, start, batch, cfg, dev, ways)
            for method in fitted:
                curve = fitted_curve(method, batch, ways or family.n_outputs, chunk=cfg.chunk)
                results[method][key] = {"fit": _entry(*curve, classification=True)}
    report = _report(art, cfg, base_lr, results)
    if cfg.split != "test":  # another report beside the test split's, which the manifest keeps
        (directory / f"report-{cfg.split}.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    update_evaluation(directory, {"protocol": report["protocol"], "results": results["maml"]})
    if plots:
        _plot(directory, report, art, family, methods, base_lr)
    return report


def _check_request(family: TaskFamily, cfg: EvalConfig) -> None:
    """Refuse, before any work, what the family cannot be evaluated on: fitted classifiers for
    regression, and ``ways`` for a family that does not sample N-way tasks (or more ways than
    the model has outputs)."""
    if cfg.split != "test" and not (isinstance(family, NWayKShot) and cfg.split in family.pools):
        raise ValueError(
            f"eval.split {cfg.split!r}: the {family.name} family has no such split (an audio "
            "folder's family.held_out makes one)"
        )
    fitted = [b for b in cfg.baselines if b in FITTED]
    if fitted and family.kind != "classification":
        raise ValueError(
            f"eval.baselines {fitted} are classifiers; the {family.name} family's tasks are "
            f"{family.kind}"
        )
    if not cfg.ways:
        return
    if not isinstance(family, NWayKShot):
        raise ValueError(
            f"eval.ways is for N-way K-shot families; the {family.name} family's tasks have "
            "no number of ways to choose"
        )
    if max(cfg.ways) > family.ways:
        raise ValueError(
            f"eval.ways {max(cfg.ways)}: the artifact's model has {family.ways} outputs"
        )


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
        run = art.manifest.training.config
        assert isinstance(run, Config)  # evaluate_artifact's check
        trained = run.train
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


def _test_tasks(
    family: TaskFamily, cfg: EvalConfig, shots: int, ways: int | None, dev: torch.device
) -> TaskBatch:
    """``cfg.tasks`` test tasks of ``shots`` shots (and ``ways`` classes, if given), the same
    ones for every method (one seed)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if ways is None:
        return family.sample(cfg.tasks, gen, split=cfg.split, shots=shots).to(dev)
    nway = cast(NWayKShot, family)  # _check_request refused ways for any other family
    return nway.sample(cfg.tasks, gen, split=cfg.split, shots=shots, ways=ways).to(dev)


def _scores(
    art: Artifact,
    method: Method,
    batch: TaskBatch,
    cfg: EvalConfig,
    dev: torch.device,
    n_classes: int | None,
) -> dict[str, dict[str, float]]:
    """One method's mean query loss (and accuracy, for classification), each with its 95%
    half-width, after each of ``cfg.steps`` inner steps (the first ``n_classes`` outputs
    counting, if given)."""
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
        n_classes=n_classes,
    )
    classification = art.task_kind == "classification"
    return {str(s): _entry(losses[:, s], metrics[:, s], classification) for s in cfg.steps}


def _entry(losses: Tensor, metrics: Tensor, classification: bool) -> dict[str, float]:
    """Mean loss (and accuracy, for classification) over tasks, each with its 95% half-width."""
    mean, ci = mean_ci95(losses)
    entry = {"loss": mean, "loss_ci95": ci}
    if classification:
        acc, acc_ci = mean_ci95(metrics)
        entry |= {"accuracy": acc, "accuracy_ci95": acc_ci}
    return entry


def _report(
    art: Artifact, cfg: EvalConfig, base_lr: float, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """report.json: what was evaluated, how, and the results (method -> shots, or ways and
    shots -> steps, or "fit"; see the module's docstring)."""
    baselines: dict[str, Any] = {
        "pretrained_iterations": cfg.baseline_iterations if "pretrained" in cfg.baselines else None
    }
    if "centroid" in cfg.baselines:
        baselines["centroid"] = {"similarity": "cosine", "loss_temperature": CENTROID_TEMPERATURE}
    if "logreg" in cfg.baselines:
        baselines["logreg"] = {"penalty": "l2", "C": LOGREG_C, "bias_penalised": False}
    return {
        "artifact": {"name": art.name, "version": art.version},
        "protocol": {
            "tasks": cfg.tasks,
            "seed": cfg.seed,
            "steps": cfg.steps,
            "ways": cfg.ways,
            "inner_lr": base_lr,
            "learned_lr": art.manifest.inner_loop.learned_lr,
            "split": cfg.split,
            "queries": "as the family's test split",
        },
        "baselines": baselines,
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
