"""Meta-training throughput of `meta-core train` itself: processes, threads and training options.

Each configuration trains the preset for ``--iterations`` meta-iterations into a fresh folder
and is read back from its metrics.jsonl: tasks/s is the median of the ``train`` lines, leaving
out the first (warm-up, compilation) and the last (validation may fall in it). A configuration
is ``PxT`` (P processes under torchrun, gloo on the CPU or NCCL on P GPUs, T torch threads
each, 0 for torch's default; ``1xT`` runs without torchrun), optionally followed by ``:`` and
comma-separated settings for that run only, e.g. ``1x0:train.bf16=true,train.fused_adam=true``.
With ``--flops WORKLOAD`` (a workload of benchmarks/meta_train.py with the preset's ways, shots
and steps) each row also gives the GFLOP/s achieved and the device's measured peak for the same
convolutions. One JSON line per configuration, with its speed-up over the first (a
configuration that fails or runs over ``--timeout`` gives its line with the error, and the
others still run); nothing is asserted.

    python benchmarks/train_throughput.py --preset omniglot-5w1s --configs 1x1 2x1 1x2
    python benchmarks/train_throughput.py --preset omniglot-20w1s --device cuda \\
        --flops w2-omniglot-20w --configs 1x0 1x0:train.bf16=true 1x0:train.fused_adam=true
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from meta_train import WORKLOADS, conv_peak_gflops, workload_flops

ROOT = Path(__file__).resolve().parents[1]


def parse_config(config: str) -> tuple[int, int, list[str]]:
    """``PxT[:key=value,...]`` -> processes, threads, the settings."""
    shape, _, settings = config.partition(":")
    processes, threads = (int(n) for n in shape.split("x"))
    return processes, threads, [item for item in settings.split(",") if item]


def run(preset: str, config: str, args: argparse.Namespace) -> dict:
    processes, threads, settings = parse_config(config)
    out = Path(tempfile.mkdtemp()) / "run"
    train = ["-m", "meta_core.cli", "train", "--preset", preset, "--out", str(out), "--no-progress"]
    fixed = {
        "train.iterations": args.iterations,
        "train.log_every": args.log_every,
        "train.val_every": args.iterations,
        "train.checkpoint_every": args.iterations,
        "train.threads": threads,
        "train.device": args.device,
    }
    for item in [f"{key}={value}" for key, value in fixed.items()] + settings:
        train += ["--set", item]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes)]
        command = [sys.executable, *launcher, *train]
    else:
        command = [sys.executable, *train]
    row: dict = {
        "measurement": "train_throughput",
        "preset": preset,
        "config": config,
        "processes": processes,
        "threads_per_process": threads,
        "settings": settings,
        "device": args.device,
        "iterations": args.iterations,
        "cpus": os.cpu_count(),
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return row | {"error": f"over --timeout {args.timeout} s"}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    if done.returncode != 0:  # one option failing must not cost the others' figures
        return row | {"error": done.stderr[-2000:]}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [line["tasks_per_s"] for line in lines if line["event"] == "train"][1:-1]
    if not rates:
        return row | {"error": "too few log lines: raise --iterations or lower --log-every"}
    return row | {"tasks_per_s": statistics.median(rates), "tasks_per_s_windows": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="omniglot-5w1s")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["1x1", "2x1", "1x2"],
        help="PxT[:key=value,...]: processes x threads, and settings for that run",
    )
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    parser.add_argument(
        "--flops", choices=list(WORKLOADS), help="count GFLOP/s with this workload's FLOPs/task"
    )
    args = parser.parse_args()
    extra: dict = {}
    per_task = 0.0
    if args.flops:
        name = args.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        # Second order unless a configuration says otherwise (then its row says so).
        per_task = workload_flops(args.flops, False, device) / WORKLOADS[args.flops]["meta_batch"]
        extra = {
            "flops_workload": args.flops,
            "peak_conv_gflops": round(conv_peak_gflops(device, sync), 1),
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        }
    first = None
    for config in args.configs:
        row = run(args.preset, config, args) | extra
        if "error" in row:
            print(json.dumps(row), flush=True)
            continue
        first = first or row["tasks_per_s"]
        row["speedup"] = round(row["tasks_per_s"] / first, 2)
        if per_task:
            row["achieved_gflops"] = round(row["tasks_per_s"] * per_task / 1e9, 1)
            if any("first_order" in item for item in row["settings"]):
                row["achieved_gflops_note"] = "counted with second-order FLOPs"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
