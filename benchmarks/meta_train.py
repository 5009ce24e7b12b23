"""Meta-training throughput on the W1 (sinusoid) and W2 (Conv4 few-shot) workloads.

The workloads (docs/benchmarks.md): ``w1`` is sinusoid regression (MLP 1-40-40-1, K = 10,
meta-batch 25, 1 inner step at lr 0.01); ``w2`` is Conv4 5-way 1-shot on random 28x28 images
(meta-batch 32, 1 inner step at lr 0.4); ``w2-omniglot`` is W2 on real Omniglot batches, and
``w2-omniglot-20w`` the 20-way 1-shot setting on them (5 inner steps at lr 0.1, meta-batch 16).

Prints one JSON line per measurement: tasks/s, seconds per iteration, peak resident memory,
threads and device; for W2 also the achieved GFLOP/s (FLOPs of one iteration counted by
``torch.utils.flop_counter``) beside the machine's measured peak for the same convolutions (one
large batched forward + backward of Conv4's layers). It never asserts a time.

Compared implementations, on the same workload and machine:
- ``meta_core`` with each execution strategy (``vmap`` over tasks, the same under
  ``torch.compile`` (``vmap-compile``, as ``train.compile = true``), or the per-task ``loop``);
- ``reference``: learn2learn's MAML algorithm (clone the parameters, adapt task by task with
  ``torch.autograd.grad(create_graph=True)``, backward per task), written out here because
  learn2learn 0.2.0 does not build on Python 3.11 (its shipped Cython C needs longintrepr.h).
  It does less Python work per task than learn2learn's module cloning, so ratios against it
  understate ours.

    python benchmarks/meta_train.py --threads 2
    python benchmarks/meta_train.py --device cuda --workload w2
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable

import torch
from pydantic import TypeAdapter
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from meta_core.algorithms import MetaLearner
from meta_core.config import AlgorithmConfig, FamilyConfig
from meta_core.inner_loop import LOSSES
from meta_core.networks import build_network
from meta_core.tasks import TaskBatch, build_family

WORKLOADS = {
    "w1": {
        "family": {"name": "sinusoid", "shots": 10, "queries": 10},
        "arch": {"type": "mlp", "in_features": 1, "hidden": [40, 40], "out_features": 1},
        "meta_batch": 25,
        "lr": 0.01,
        "kind": "regression",
    },
    "w2": {
        "family": {"name": "random_images", "ways": 5, "shots": 1, "queries": 15},
        "arch": {
            "type": "conv4",
            "in_channels": 1,
            "image_size": 28,
            "hidden": 64,
            "out_features": 5,
            "norm": "layer",
        },
        "meta_batch": 32,
        "lr": 0.4,
        "kind": "classification",
    },
}
# W2 on real Omniglot batches (the 5-way 1-shot preset's family, held in memory as uint8).
WORKLOADS["w2-omniglot"] = WORKLOADS["w2"] | {
    "family": {"name": "omniglot", "ways": 5, "shots": 1, "queries": 15}
}
# The paper's 20-way 1-shot setting on real Omniglot batches: 5 inner steps at lr 0.1,
# meta-batch 16.
WORKLOADS["w2-omniglot-20w"] = WORKLOADS["w2"] | {
    "family": {"name": "omniglot", "ways": 20, "shots": 1, "queries": 15},
    "arch": WORKLOADS["w2"]["arch"] | {"out_features": 20},
    "meta_batch": 16,
    "lr": 0.1,
    "steps": 5,
}


FAMILY: TypeAdapter[FamilyConfig] = TypeAdapter(FamilyConfig)


def reference_step(
    model: torch.nn.Module,
    params: dict,
    batch: TaskBatch,
    *,
    lr: float,
    kind: str,
    first_order: bool,
    steps: int = 1,
) -> torch.Tensor:
    """learn2learn-style MAML: per task, clone, adapt with autograd.grad, backward."""
    loss_fn = LOSSES[kind]
    total = torch.zeros(())
    for i in range(len(batch)):
        fast = {k: v.clone() for k, v in params.items()}
        for _ in range(steps):
            out = functional_call(model, fast, (batch.support_x[i],))
            loss = loss_fn(out, batch.support_y[i])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {k: v - lr * g for (k, v), g in zip(fast.items(), grads, strict=True)}
        q = loss_fn(functional_call(model, fast, (batch.query_x[i],)), batch.query_y[i])
        (q / len(batch)).backward()
        total = total + q.detach()
    return total


def workload_reference(
    model: torch.nn.Module, params: dict, batch: TaskBatch, w: dict, first_order: bool
) -> torch.Tensor:
    """:func:`reference_step` with workload ``w``'s inner loop."""
    return reference_step(
        model,
        params,
        batch,
        lr=w["lr"],
        kind=w["kind"],
        first_order=first_order,
        steps=w.get("steps", 1),
    )


def make_step(
    model: torch.nn.Module,
    learner: MetaLearner,
    opt: torch.optim.Optimizer,
    batches: list[TaskBatch],
    strategy: str,
    w: dict,
    first_order: bool,
) -> Callable[[], None]:
    """One meta-training iteration (sample, meta-loss, backward, Adam) of one implementation."""
    counter = iter(range(10**9))
    meta_loss = (
        torch.compile(learner.meta_loss) if strategy.endswith("-compile") else learner.meta_loss
    )

    def step() -> None:
        batch = batches[next(counter) % len(batches)]
        opt.zero_grad(set_to_none=True)
        if strategy == "reference":
            workload_reference(model, learner.params, batch, w, first_order)
        else:
            loss, _ = meta_loss(batch, strategy=strategy.removesuffix("-compile"))
            loss.backward()
        opt.step()

    return step


def workload_flops(name: str, first_order: bool, device: torch.device) -> int:
    """FLOPs of one meta-iteration of workload ``name``, counted on the reference (vmap's
    grouped convolutions are counted as dense by the counter; the maths is the same)."""
    w = WORKLOADS[name]
    family = build_family(FAMILY.validate_python(w["family"])).to(device)
    torch.manual_seed(0)
    model = build_network(w["arch"]).to(device)
    algo = AlgorithmConfig(inner_lr=w["lr"], inner_steps=w.get("steps", 1), first_order=first_order)
    learner = MetaLearner.create(model, w["kind"], algo)
    batch = family.sample(w["meta_batch"], torch.Generator().manual_seed(0)).to(device)
    with FlopCounterMode(display=False) as counter:
        workload_reference(model, learner.params, batch, w, first_order)
    return counter.get_total_flops()


def measure(step: Callable[[], None], iters: int, sync: Callable[[], None]) -> float:
    for _ in range(max(3, iters // 10)):  # warm-up (and torch.compile's compilation)
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters


def conv_peak_gflops(device: torch.device, sync: Callable[[], None]) -> float:
    """The best GFLOP/s of Conv4 forward + backward over one plain batch (no per-task weights),
    among several batch sizes and both memory formats: the device's practical peak for the
    same convolutions."""
    best = 0.0
    for images in (80, 320, 1280):
        for channels_last in (False, True):
            net = build_network(WORKLOADS["w2"]["arch"]).to(device)
            x = torch.randn(images, 1, 28, 28, device=device)
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)

            def step(net: torch.nn.Module = net, x: torch.Tensor = x) -> None:
                net.zero_grad(set_to_none=True)
                net(x).sum().backward()

            with FlopCounterMode(display=False) as counter:
                step()
            seconds = measure(step, max(3, 2560 // images), sync)
            best = max(best, counter.get_total_flops() / seconds / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--order", choices=["first", "second", "both"], default="both")
    parser.add_argument("--strategies", default="vmap,vmap-compile,loop,reference")
    parser.add_argument("--iters", type=int, default=0, help="timed iterations (0 = auto)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    workloads = ["w1", "w2"] if args.workload == "all" else [args.workload]
    orders = {"first": [True], "second": [False], "both": [False, True]}[args.order]
    peak = None
    flops: dict[tuple[str, bool], int] = {}
    for name in workloads:
        w = WORKLOADS[name]
        family = build_family(FAMILY.validate_python(w["family"])).to(device)
        gen = torch.Generator().manual_seed(0)
        for first_order in orders:
            for strategy in args.strategies.split(","):
                torch.manual_seed(0)
                model = build_network(w["arch"]).to(device)
                algo = AlgorithmConfig(
                    inner_lr=w["lr"], inner_steps=w.get("steps", 1), first_order=first_order
                )
                learner = MetaLearner.create(model, w["kind"], algo)
                opt = torch.optim.Adam(learner.meta_parameters(), 1e-3)
                batches = [family.sample(w["meta_batch"], gen).to(device) for _ in range(4)]
                step = make_step(model, learner, opt, batches, strategy, w, first_order)
                cuda = device.type == "cuda"
                iters = (
                    args.iters
                    or {("w1", False): 200, ("w1", True): 100, ("w2", False): 5, ("w2", True): 30}[
                        (name[:2], cuda)
                    ]
                )
                seconds = measure(step, iters, sync)
                row = {
                    "workload": name,
                    "device": str(device),
                    "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "threads": torch.get_num_threads(),
                    "order": "first" if first_order else "second",
                    "impl": "reference" if strategy == "reference" else "meta_core",
                    "strategy": strategy,
                    "meta_batch": w["meta_batch"],
                    "tasks_per_s": round(w["meta_batch"] / seconds, 1),
                    "s_per_iter": round(seconds, 5),
                    "peak_rss_mb": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                    ),
                }
                if name.startswith("w2"):
                    if (name, first_order) not in flops:
                        flops[name, first_order] = workload_flops(name, first_order, device)
                    peak = peak or conv_peak_gflops(device, sync)
                    row |= {
                        "gflop_per_iter": round(flops[name, first_order] / 1e9, 2),
                        "achieved_gflops": round(flops[name, first_order] / seconds / 1e9, 1),
                        "peak_conv_gflops": round(peak, 1),
                        "projected_60k_iter_hours": round(seconds * 60_000 / 3600, 2),
                    }
                if device.type == "cuda":
                    row["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
