"""Evaluating a policy meta-model as the MAML paper's figure 5: the average return on tasks no
run trained on after 0, 1, 2 and 3 adaptation steps (each step rolls the current policy out
and takes the inner step on those rollouts), for MAML against a policy pretrained on every
task at once and a randomly initialised one, both adapted the same way; 95% intervals over
tasks. ``report.json``, a plot and the manifest's ``evaluation`` are written beside the
artifact."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.func import vmap

from meta_core.artifact import InnerLoopSpec, load_artifact, update_evaluation
from meta_core.inner_loop import InnerLoop, Params
from meta_core.networks import build_network
from meta_core.rl.config import EvalConfig, PolicyRunConfig
from meta_core.rl.environments import Environment, sample_environment
from meta_core.rl.rollouts import Rollouts, policy_of, sample, support_set
from meta_core.rl.train import architecture, meta_train, rollout_spec, save_policy
from meta_core.rl.trpo import meta_parameters

log = logging.getLogger(__name__)


def adapt_on(
    loop: InnerLoop, params: Params, rollouts: Rollouts, cfg: PolicyRunConfig, batched: bool
) -> Params:
    """One inner step per task on its rollouts (``params`` shared by every task, or one set
    per task), without a meta-gradient."""
    x, y = support_set(rollouts, rollout_spec(cfg))
    with torch.no_grad():
        fast = vmap(loop.adapt, in_dims=(0 if batched else None, 0, 0))(params, x, y)
    return {k: v.detach() for k, v in fast.items()}


def adaptation_returns(
    model: torch.nn.Module,
    params: Params,
    env: Environment,
    cfg: PolicyRunConfig,
    lrs: list[float],
    seed: int,
) -> torch.Tensor:
    """Each task's mean return over ``trajectories`` rollouts before and after each inner
    step from ``params``, step ``k`` at ``lrs[k]``: ``[len(lrs) + 1, tasks]``."""
    generator = torch.Generator().manual_seed(seed)
    current, batched, returns = dict(params), False, []
    for step in range(len(lrs) + 1):
        policy = policy_of(model, current, batched)
        rollouts = sample(policy, env, cfg.adaptation.trajectories, cfg.env.horizon, generator)
        returns.append(rollouts.returns().mean(-1))
        if step < len(lrs):
            loop = InnerLoop(model, "policy", 1, lrs[step], first_order=True)
            current, batched = adapt_on(loop, current, rollouts, cfg, batched), True
    return torch.stack(returns)


def step_lrs(inner: InnerLoopSpec, steps: int, later_lr: float = 0.0) -> list[float]:
    """Each step's lr: the meta-model's ``lr`` first, then ``later_lr`` if given, else its
    own ``later_lr``, else ``lr`` again."""
    later = later_lr or inner.later_lr or inner.lr
    return [inner.lr, *[later] * (steps - 1)][:steps]


def starts(
    params: Params, cfg: PolicyRunConfig, iterations: int, save_to: Path | None = None
) -> dict[str, Params]:
    """The three starting points: the meta-policy, a policy pretrained by TRPO on its own
    rollouts of every task (``iterations`` steps, the run's seed; written as an artifact to
    ``save_to`` if given), and a random one."""
    pretrain = cfg.model_copy(
        update={
            "adaptation": cfg.adaptation.model_copy(update={"inner_steps": 0}),
            "train": cfg.train.model_copy(
                update={"iterations": iterations, "name": f"{cfg.train.name}-pretrained"}
            ),
        }
    )
    log.info("pretraining the multi-task baseline for %d iterations", iterations)
    run = meta_train(pretrain, log_every=max(iterations // 10, 1))
    if save_to is not None:
        save_policy(pretrain, save_to, run)
    pretrained = run.params
    torch.manual_seed(cfg.eval.seed)
    fresh = meta_parameters(build_network(architecture(cfg)))
    detached = {k: v.detach() for k, v in params.items()}
    return {
        "maml": detached,
        "pretrained": {k: v.detach() for k, v in pretrained.items()},
        "random": {k: v.detach() for k, v in fresh.items()},
    }


def summary(returns: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per step: the mean return over tasks and its 95% interval's half-width."""
    n = returns.shape[1]
    out = {}
    for step, row in enumerate(returns):
        sd = float(row.std()) if n > 1 else float("nan")
        out[str(step)] = {
            "return": round(float(row.mean()), 3),
            "return_ci95": round(1.96 * sd / math.sqrt(n), 3),
        }
    return out


def evaluate_policy(
    directory: Path | str, cfg: EvalConfig, *, plots: bool = True
) -> dict[str, Any]:
    """Evaluate a policy artifact on ``cfg.tasks`` goals drawn with ``cfg.seed``."""
    directory = Path(directory)
    art = load_artifact(directory)
    run = art.manifest.training.config
    if not isinstance(run, PolicyRunConfig):
        raise ValueError(f"{directory} is not a policy meta-model")
    run = run.model_copy(update={"eval": cfg})
    lrs = step_lrs(art.manifest.inner_loop, cfg.steps, cfg.later_lr)
    iterations = cfg.baseline_iterations or art.manifest.training.iterations_done
    env = sample_environment(run.env, cfg.tasks, torch.Generator().manual_seed(cfg.seed))
    results = {}
    save_to = directory / "baselines" / "pretrained" if cfg.save_baselines else None
    for method, params in starts(art.params, run, iterations, save_to).items():
        returns = adaptation_returns(art.network(), params, env, run, lrs, cfg.seed + 1)
        results[method] = summary(returns)
        log.info("%s: %s", method, {s: v["return"] for s, v in results[method].items()})
    protocol = {
        "tasks": cfg.tasks,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "trajectories": run.adaptation.trajectories,
        "inner_lr": lrs,
        "baseline_iterations": iterations,
        "metric": "average return (undiscounted) of the trajectories after each step",
    }
    report = {"model": art.name, "version": art.version, "protocol": protocol, "results": results}
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    update_evaluation(directory, {"protocol": protocol, "results": results["maml"]})
    if plots:
        returns_plot(directory, report)
    return report


def log_scale(report: dict[str, Any]) -> bool:
    """Whether the plot needs a log scale: some return is over ten times another (2D
    navigation's random policy against the others), not on a span a linear axis shows."""
    sizes = [abs(v["return"]) for by_step in report["results"].values() for v in by_step.values()]
    return bool(max(sizes) > 10 * max(min(sizes), 1.0))


def returns_plot(directory: Path, report: dict[str, Any]) -> Path:
    """The paper's figure: return against adaptation steps, one line per method, 95% bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, by_step in report["results"].items():
        steps = [int(s) for s in by_step]
        ax.errorbar(
            steps,
            [v["return"] for v in by_step.values()],
            yerr=[v["return_ci95"] for v in by_step.values()],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xlabel("adaptation steps")
    if log_scale(report):
        ax.set_ylabel("average return (symmetric log scale)")
        ax.set_yscale("symlog", linthresh=10)
    else:
        ax.set_ylabel("average return")
    ax.set_xticks(steps)
    ax.set_title(f"{report['model']}: {report['protocol']['tasks']} held-out goals")
    ax.legend(loc="center right")
    fig.tight_layout()
    path = directory / "plots" / "returns.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
