"""Meta-training: meta-batches, Adam on the meta-parameters, validation, checkpoints, artifact.

The run directory holds ``metrics.jsonl`` (one JSON line per log interval and validation),
``checkpoint/`` (safetensors + JSON, written atomically every ``checkpoint_every`` iterations
and on Ctrl-C) and, at the end, the artifact of the best validated meta-parameters.
``--resume`` continues from the checkpoint with the same random stream, so an interrupted run
ends where an uninterrupted one would. ``train.init_from`` starts instead from an artifact's
meta-parameters (a warm restart: fresh Adam state and schedule), so separate budgets add up.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from meta_core.algorithms import (
    MetaLearner,
    choose_strategy,
    cosine_lr,
    multi_step_weights,
)
from meta_core.artifact import load_artifact, save_artifact
from meta_core.config import Config
from meta_core.evaluate import adaptation_curve
from meta_core.networks import ArchSpec, build_network
from meta_core.tasks import TaskBatch, TaskFamily, build_family

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def architecture(model_cfg: dict[str, Any], family: TaskFamily) -> ArchSpec:
    """The full architecture spec: the preset's model table plus the family's shapes."""
    spec = dict(model_cfg)
    shape = family.input_shape
    if spec["type"] == "mlp":
        spec |= {"in_features": shape[0], "out_features": family.n_outputs}
    else:
        spec |= {"in_channels": shape[0], "image_size": shape[1], "out_features": family.n_outputs}
    return spec


def preprocessing(family_cfg: dict[str, Any]) -> dict[str, Any] | None:
    if family_cfg["name"] == "omniglot":
        from meta_core.data.omniglot import PREPROCESSING

        return PREPROCESSING
    return None


@dataclass
class RunState:
    iteration: int = 0
    best_val: float = float("inf")
    best_iteration: int = -1
    elapsed: float = 0.0
    warm_start: dict[str, Any] | None = None  # the artifact ``train.init_from`` started from


def train(cfg: Config, out: Path | str, *, resume: bool = False, progress: bool = True) -> Path:
    """Meta-train as ``cfg`` says and write the artifact into ``out``; return ``out``."""
    out = Path(out)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    family = build_family(cfg.family)
    if hasattr(family, "to"):
        family.to(device)
    spec = architecture(cfg.model, family)
    torch.manual_seed(tc.seed)
    model = build_network(spec).to(device)
    learner = MetaLearner.create(model, family.kind, cfg.algorithm)
    strategy = choose_strategy(tc.strategy, spec["type"], device)
    opt = torch.optim.Adam(learner.meta_parameters(), lr=tc.outer_lr)
    gen = torch.Generator().manual_seed(tc.seed)
    val_batch = family.sample(
        tc.val_tasks, torch.Generator().manual_seed(tc.seed + 1), split="val"
    ).to(device)
    state = RunState()
    if tc.init_from and not resume:  # a resumed run's checkpoint already holds its start
        state.warm_start = warm_start(learner, spec, tc.init_from)
    best: dict[str, Tensor] = {}
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    if resume:
        state, best = _load_checkpoint(out, cfg, learner, opt, gen)
        _truncate_metrics(metrics_path, state.iteration)
        log.info("resumed %s at iteration %d", out, state.iteration)
    elif (out / CHECKPOINT).exists():
        raise FileExistsError(f"{out} holds a checkpoint: pass --resume or choose a new --out")
    else:
        metrics_path.write_text("")
    log.info(
        "training %s on %s (%s, strategy %s%s, %d threads)",
        cfg.name,
        device,
        cfg.algorithm.name,
        strategy,
        " compiled" if tc.compile else "",
        torch.get_num_threads(),
    )
    meta_loss = torch.compile(learner.meta_loss) if tc.compile else learner.meta_loss

    bar = tqdm(
        total=tc.iterations,
        initial=state.iteration,
        disable=not progress,
        desc=cfg.name,
        dynamic_ncols=True,
    )
    started = time.perf_counter() - state.elapsed
    window_start, window_iters = time.perf_counter(), 0
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if tc.bf16 and device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    interrupt = _DeferredInterrupt()
    try:
        with interrupt, metrics_path.open("a") as metrics:
            while state.iteration < tc.iterations:
                if interrupt.requested:
                    state.elapsed = time.perf_counter() - started
                    _save_checkpoint(out, cfg, learner, opt, gen, state, best)
                    log.warning(
                        "interrupted at iteration %d; checkpoint saved: continue with --resume",
                        state.iteration,
                    )
                    raise KeyboardInterrupt
                if tc.max_seconds and time.perf_counter() - started > tc.max_seconds:
                    log.info(
                        "time budget of %.0f s reached at iteration %d",
                        tc.max_seconds,
                        state.iteration,
                    )
                    break
                it = state.iteration
                if tc.cosine:
                    for group in opt.param_groups:
                        group["lr"] = cosine_lr(tc.outer_lr, tc.min_outer_lr, it, tc.iterations)
                weights = None
                if cfg.algorithm.multi_step_loss:
                    weights = multi_step_weights(
                        cfg.algorithm.inner_steps, it, cfg.algorithm.msl_iterations
                    ).to(device)
                batch = family.sample(tc.meta_batch, gen).to(device)
                with amp:
                    loss, met = meta_loss(batch, strategy=strategy, step_weights=weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(learner.meta_parameters(), tc.grad_clip)
                opt.step()
                state.iteration += 1
                window_iters += 1
                bar.update(1)
                done = state.iteration
                if done % tc.log_every == 0 or done == tc.iterations:
                    now = time.perf_counter()
                    rate = window_iters * tc.meta_batch / (now - window_start)
                    row = {
                        "event": "train",
                        "iteration": done,
                        "loss": loss.item(),
                        "metric": met.item(),
                        "tasks_per_s": round(rate, 1),
                        "outer_lr": opt.param_groups[0]["lr"],
                        "elapsed_s": round(now - started, 2),
                    }
                    metrics.write(json.dumps(row) + "\n")
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tasks_s=f"{rate:.0f}")
                    window_start, window_iters = now, 0
                if done % tc.val_every == 0 or done == tc.iterations:
                    val_loss, val_metric = validate(learner, val_batch)
                    if val_loss < state.best_val:
                        state.best_val, state.best_iteration = val_loss, done
                        best = _snapshot(learner)
                    metrics.write(
                        json.dumps(
                            {
                                "event": "val",
                                "iteration": done,
                                "loss": val_loss,
                                "metric": val_metric,
                                "best_iteration": state.best_iteration,
                            }
                        )
                        + "\n"
                    )
                    log.info(
                        "iteration %d: validation loss %.4f metric %.4f (best %d)",
                        done,
                        val_loss,
                        val_metric,
                        state.best_iteration,
                    )
                if done % tc.checkpoint_every == 0:
                    metrics.flush()
                    state.elapsed = time.perf_counter() - started
                    _save_checkpoint(out, cfg, learner, opt, gen, state, best)
    finally:
        bar.close()
    state.elapsed = time.perf_counter() - started
    if not best or state.best_iteration != state.iteration:
        val_loss, _ = validate(learner, val_batch)
        if val_loss < state.best_val or not best:
            state.best_val, state.best_iteration, best = (
                val_loss,
                state.iteration,
                _snapshot(learner),
            )
    _save_checkpoint(out, cfg, learner, opt, gen, state, best)
    write_artifact(out, cfg, spec, family, learner, best, state, device, strategy)
    return out


def warm_start(learner: MetaLearner, spec: ArchSpec, source: str) -> dict[str, Any]:
    """Copy an artifact's meta-parameters into ``learner``; return its identity for the
    manifest. The architecture and every tensor's name and shape must match."""
    art = load_artifact(source)
    theirs = art.manifest["architecture"]
    if theirs != dict(spec):
        raise ValueError(
            f"init_from {source}: architecture {theirs} differs from this run's {spec}"
        )
    for mine, given, what in (
        (learner.params, art.params, "weights"),
        (learner.lrs, art.lrs, "lrs"),
    ):
        if {k: tuple(v.shape) for k, v in mine.items()} != {
            k: tuple(v.shape) for k, v in given.items()
        }:
            raise ValueError(f"init_from {source}: its {what} do not match this run's algorithm")
        with torch.no_grad():
            for k, v in mine.items():
                v.copy_(given[k])
    log.info("warm start from %s %s (%s)", art.name, art.version, art.manifest["content_hash"])
    return {
        "path": str(source),
        "name": art.name,
        "version": art.version,
        "content_hash": art.manifest["content_hash"],
    }


class _DeferredInterrupt:
    """The first Ctrl-C stops training at the end of the current iteration, which is then
    checkpointed, so nothing is lost; a second one stops at once, and the last periodic
    checkpoint (at most ``checkpoint_every`` iterations old) is what ``--resume`` finds."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this iteration (again to stop at once)")

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def validate(learner: MetaLearner, batch: TaskBatch) -> tuple[float, float]:
    """Mean query loss and metric on held-out tasks after the training number of steps."""
    steps = learner.algo.inner_steps
    losses, metrics = adaptation_curve(
        learner.model,
        learner.params,
        batch,
        kind=learner.kind,
        steps=steps,
        lr=learner.inner_lr(),
        adapt_names=learner.adapt_names,
    )
    return losses[:, steps].mean().item(), metrics[:, steps].mean().item()


def _snapshot(learner: MetaLearner) -> dict[str, Tensor]:
    return {f"net.{k}": v.detach().clone() for k, v in learner.params.items()} | {
        f"lr.{k}": v.detach().clone() for k, v in learner.lrs.items()
    }


def write_artifact(
    out: Path,
    cfg: Config,
    spec: ArchSpec,
    family: TaskFamily,
    learner: MetaLearner,
    best: dict[str, Tensor],
    state: RunState,
    device: torch.device,
    strategy: str,
) -> None:
    algo = cfg.algorithm
    learned = "metasgd" if algo.name == "metasgd" else "lslr" if algo.lslr else "none"
    save_artifact(
        out,
        name=cfg.name,
        version=cfg.version,
        architecture=spec,
        task_kind=family.kind,
        params={k[4:]: v for k, v in best.items() if k.startswith("net.")},
        lrs={k[3:]: v for k, v in best.items() if k.startswith("lr.")},
        inner_loop={
            "steps": algo.inner_steps,
            "lr": algo.inner_lr,
            "learned_lr": learned,
            "adapt": "head" if algo.name == "anil" else "all",
            "first_order_training": algo.first_order,
        },
        preprocessing=preprocessing(cfg.family),
        training={
            "config": cfg.to_dict(),
            "family": family.describe(),
            "iterations_done": state.iteration,
            "best_iteration": state.best_iteration,
            "best_val_loss": state.best_val,
            "seconds": round(state.elapsed, 1),
            "warm_start": state.warm_start,
            "device": str(device),
            "strategy": strategy,
            "threads": torch.get_num_threads(),
        },
    )


def _save_checkpoint(
    out: Path,
    cfg: Config,
    learner: MetaLearner,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    state: RunState,
    best: dict[str, Tensor],
) -> None:
    """Tensors to safetensors, the rest to JSON; both replaced atomically (JSON last)."""
    folder = out / CHECKPOINT
    folder.mkdir(exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in _snapshot(learner).items()}
    tensors |= {f"best.{k}": v.cpu().contiguous() for k, v in best.items()}
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{idx}.{slot}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng"] = gen.get_state()
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "state.safetensors")
    meta = {
        "iteration": state.iteration,
        "best_val": state.best_val,
        "best_iteration": state.best_iteration,
        "elapsed": state.elapsed,
        "warm_start": state.warm_start,
        "param_groups": opt_state["param_groups"],
        "config": cfg.to_dict(),
    }
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / "state.json")


def _load_checkpoint(
    out: Path, cfg: Config, learner: MetaLearner, opt: torch.optim.Optimizer, gen: torch.Generator
) -> tuple[RunState, dict[str, Tensor]]:
    folder = out / CHECKPOINT
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"no checkpoint in {folder} to resume from")
    meta = json.loads((folder / "state.json").read_text())
    if _maths(meta["config"]) != _maths(cfg.to_dict()):
        raise ValueError(
            "the checkpoint was made with another configuration; resume with the "
            "same preset and overrides (only train.compile, strategy, threads, "
            "device and max_seconds may change)"
        )
    tensors = load_file(str(folder / "state.safetensors"))
    device = next(iter(learner.params.values())).device
    with torch.no_grad():
        for k, v in learner.params.items():
            v.copy_(tensors[f"net.{k}"])
        for k, v in learner.lrs.items():
            v.copy_(tensors[f"lr.{k}"])
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, slot = key.split(".", 2)
            slots.setdefault(int(idx), {})[slot] = value if slot == "step" else value.to(device)
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    gen.set_state(tensors["rng"])
    best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    state = RunState(
        meta["iteration"],
        meta["best_val"],
        meta["best_iteration"],
        meta["elapsed"],
        meta.get("warm_start"),
    )
    return state, best


EXECUTION_FIELDS = ("compile", "strategy", "threads", "device", "max_seconds")


def _maths(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the fields that change how a run executes, not what it computes."""
    train = {k: v for k, v in config["train"].items() if k not in EXECUTION_FIELDS}
    return config | {"train": train}


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines logged after the checkpoint, so a resumed run logs each once."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["iteration"] <= iteration
    ]
    path.write_text("".join(line + "\n" for line in keep))
