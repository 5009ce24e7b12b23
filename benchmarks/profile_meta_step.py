"""A ``torch.profiler`` summary of one meta-iteration: the top operators and
kernels by self time, the gaps between kernel launches on CUDA, and peak memory, for Conv4
5-way 1-shot (1 step, meta-batch 32) and 20-way 1-shot (5 steps, meta-batch 16), second order,
vmap over tasks as training runs on a GPU. Random images of Omniglot's shape by default
(``--omniglot`` for the real batches). Writes ``profile_<workload>.txt`` (the tables) and
``profile_<workload>.json`` (the summary figures) under ``--out``, and prints the JSON lines.

    python benchmarks/profile_meta_step.py --device cuda --out $OUT/profile
    python benchmarks/profile_meta_step.py --device cpu --out /tmp/p --meta-batch 4  # dry run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from pydantic import TypeAdapter
from torch.profiler import ProfilerActivity, profile

from meta_core.algorithms import MetaLearner
from meta_core.config import AlgorithmConfig, FamilyConfig
from meta_core.networks import build_network
from meta_core.tasks import build_family

WORKLOADS = {
    "5w1s": {"ways": 5, "steps": 1, "lr": 0.4, "meta_batch": 32},
    "20w1s": {"ways": 20, "steps": 5, "lr": 0.1, "meta_batch": 16},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--omniglot", action="store_true", help="real Omniglot batches")
    parser.add_argument("--meta-batch", type=int, default=0, help="0: the workload's")
    parser.add_argument("--strategy", default="vmap")
    parser.add_argument("--first-order", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, w in WORKLOADS.items():
        summary, table = profile_workload(name, w, args, device)
        (args.out / f"profile_{name}.txt").write_text(table)
        (args.out / f"profile_{name}.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary), flush=True)


def profile_workload(
    name: str, w: dict, args: argparse.Namespace, device: torch.device
) -> tuple[dict, str]:
    """One workload's warmed-up meta-iteration, profiled: (summary, the operator table)."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    meta_batch = args.meta_batch or w["meta_batch"]
    family_cfg = {
        "name": "omniglot" if args.omniglot else "random_images",
        "ways": w["ways"],
        "shots": 1,
        "queries": 15,
    }
    family = build_family(TypeAdapter(FamilyConfig).validate_python(family_cfg)).to(device)
    spec = {
        "type": "conv4",
        "in_channels": 1,
        "image_size": 28,
        "hidden": 64,
        "out_features": w["ways"],
        "norm": "layer",
    }
    torch.manual_seed(0)
    algo = AlgorithmConfig(inner_steps=w["steps"], inner_lr=w["lr"], first_order=args.first_order)
    learner = MetaLearner.create(build_network(spec).to(device), "classification", algo)
    opt = torch.optim.Adam(learner.meta_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = family.sample(meta_batch, gen).to(device)
        loss, _ = learner.meta_loss(batch, strategy=args.strategy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator, kernels chosen
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=False, profile_memory=True) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = events.table(sort_by=sort, row_limit=25)
    summary: dict = {
        "workload": name,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "meta_batch": meta_batch,
        "inner_steps": w["steps"],
        "order": "first" if args.first_order else "second",
        "strategy": args.strategy,
        "seconds_profiled": round(seconds, 4),
        "top": [
            {
                "name": e.key,
                "calls": e.count,
                "self_ms": round(
                    (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1000, 3
                ),
            }
            for e in sorted(
                events,
                key=lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total,
                reverse=True,
            )[:10]
        ],
    }
    if cuda:
        kernels = sorted(
            (e for e in prof.events() if e.device_type.name == "CUDA"),
            key=lambda e: e.time_range.start,
        )
        busy = sum(e.time_range.elapsed_us() for e in kernels)
        span = kernels[-1].time_range.end - kernels[0].time_range.start if kernels else 0
        summary |= {
            "kernels": len(kernels),
            "gpu_busy_fraction": round(busy / span, 3) if span else None,
            "launch_gaps_ms": round((span - busy) / 1000, 3),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        }
    return summary, table


if __name__ == "__main__":
    main()
