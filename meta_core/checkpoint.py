"""Checkpoints of a training run: everything ``--resume`` needs to continue exactly.

``checkpoint/state.safetensors`` holds the tensors (meta-parameters, the best validated ones,
Adam's moments, the task sampler's RNG state: ``rng``, and under torchrun each other rank's as
``rng.<rank>``) and ``checkpoint/state.json`` the rest (iteration, best validation, elapsed
time, Adam's hyper-parameters, the number of processes, the config). Both are replaced
atomically, the JSON last, so a crash mid-write leaves the previous checkpoint readable.
Nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from meta_core.algorithms import MetaLearner
from meta_core.artifact import WarmStart
from meta_core.config import Config, apply_overrides
from meta_core.distributed import World

CHECKPOINT = "checkpoint"
# Settings that change how a run executes, not what it computes: --resume may change them.
EXECUTION_FIELDS = (
    "compile",
    "compile_mode",
    "strategy",
    "threads",
    "device",
    "max_seconds",
    "stop_after",
    "fused_adam",
    "channels_last",
)
WINDOW_FIELDS = ("max_seconds", "stop_after")  # one invocation's limits


@dataclass
class RunState:
    iteration: int = 0
    best_val: float = float("inf")
    best_iteration: int = -1
    elapsed: float = 0.0
    warm_start: WarmStart | None = None  # the artifact ``train.init_from`` started from


def snapshot(learner: MetaLearner) -> dict[str, Tensor]:
    """A detached copy of the meta-parameters, keyed as in an artifact (``net.``, ``lr.``)."""
    return {f"net.{k}": v.detach().clone() for k, v in learner.params.items()} | {
        f"lr.{k}": v.detach().clone() for k, v in learner.lrs.items()
    }


def exists(out: Path) -> bool:
    return (out / CHECKPOINT).exists()


def save_checkpoint(
    out: Path,
    cfg: Config,
    learner: MetaLearner,
    opt: torch.optim.Optimizer,
    rngs: list[Tensor],
    state: RunState,
    best: dict[str, Tensor],
) -> None:
    """Tensors to safetensors, the rest to JSON; both replaced atomically (JSON last).
    ``rngs``: each rank's task-sampler state, in rank order (one for a single process)."""
    folder = out / CHECKPOINT
    folder.mkdir(exist_ok=True)
    tensors = {k: v.cpu().contiguous() for k, v in snapshot(learner).items()}
    tensors |= {f"best.{k}": v.cpu().contiguous() for k, v in best.items()}
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{idx}.{slot}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng"] = rngs[0]
    tensors |= {f"rng.{rank}": rng for rank, rng in enumerate(rngs) if rank}
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "state.safetensors")
    meta = {
        "iteration": state.iteration,
        "best_val": state.best_val,
        "best_iteration": state.best_iteration,
        "elapsed": state.elapsed,
        "warm_start": state.warm_start.model_dump() if state.warm_start else None,
        "param_groups": opt_state["param_groups"],
        "processes": len(rngs),
        "config": cfg.to_dict(),
    }
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / "state.json")


def load_checkpoint(
    out: Path,
    cfg: Config,
    learner: MetaLearner,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    world: World | None = None,
) -> tuple[RunState, dict[str, Tensor]]:
    """Restore ``learner``, ``opt`` and ``gen`` (this rank's stream) in place; return the run
    state and the best validated meta-parameters. The config must compute the same thing as
    the checkpoint's, with as many processes."""
    world = world or World()
    folder = out / CHECKPOINT
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"no checkpoint in {folder} to resume from")
    meta = json.loads((folder / "state.json").read_text())
    if _maths(meta["config"]) != _maths(cfg.to_dict()):
        raise ValueError(
            "the checkpoint was made with another configuration; resume with the "
            "same preset and overrides (only train.compile, strategy, threads, "
            "device, max_seconds and stop_after may change)"
        )
    processes = meta.get("processes", 1)
    if processes != world.size:
        raise ValueError(
            f"the checkpoint was made by {processes} processes; resume with as many "
            f"(torchrun --nproc_per_node {processes}), not {world.size}: each holds its own "
            "random stream of tasks"
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
    gen.set_state(tensors["rng" if world.main else f"rng.{world.rank}"])
    best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    warm = meta.get("warm_start")
    state = RunState(
        meta["iteration"],
        meta["best_val"],
        meta["best_iteration"],
        meta["elapsed"],
        WarmStart.model_validate(warm) if warm else None,
    )
    return state, best


def recorded_config(out: Path, overrides: list[str]) -> Config:
    """The config a run's checkpoint records, with ``overrides`` (``--resume`` without
    ``--preset``: only execution fields may change, as ever). The last window's limits
    (``stop_after``, ``max_seconds``) are not carried over: each window sets its own."""
    state = out / CHECKPOINT / "state.json"
    if not state.exists():
        raise FileNotFoundError(f"no checkpoint in {out / CHECKPOINT} to resume from")
    config = json.loads(state.read_text())["config"]
    for window in WINDOW_FIELDS:
        config["train"].pop(window, None)
    return Config.from_dict(apply_overrides(config, overrides))


def _maths(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the fields that change how a run executes, not what it computes."""
    train = {k: v for k, v in config["train"].items() if k not in EXECUTION_FIELDS}
    return config | {"train": train}


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines logged after the checkpoint, so a resumed run logs each once."""
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["iteration"] <= iteration
    ]
    path.write_text("".join(line + "\n" for line in keep))
