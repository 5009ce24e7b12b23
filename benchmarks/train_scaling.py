"""Data-parallel meta-training throughput: `meta-core train` with P processes of T threads.

Each configuration ("PxT": P processes under torchrun, gloo on the CPU or NCCL on P GPUs, T
torch threads each; "1xT" is a single process without torchrun) trains the preset for
``--iterations`` meta-iterations into a fresh folder; its tasks/s is the median of the
``train`` lines of metrics.jsonl, leaving out the first (warm-up) and the last (validation may
fall in it). One JSON line per configuration, with its speed-up over the first; nothing is
asserted.

    python benchmarks/train_scaling.py --preset omniglot-5w1s --configs 1x1 2x1 1x2
    python benchmarks/train_scaling.py --preset omniglot-20w1s --configs 1x0 2x0 4x0 8x0  # GPUs
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

ROOT = Path(__file__).resolve().parents[1]
# Like the tests: the build machines' Omniglot copy beside the checkout, unless set.
if (ROOT.parent / "shared" / "data" / "omniglot").is_dir():
    os.environ.setdefault("OMNIGLOT_DIR", str(ROOT.parent / "shared" / "data" / "omniglot"))


def run(preset: str, processes: int, threads: int, args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkdtemp()) / "run"
    train = ["-m", "meta_core.cli", "train", "--preset", preset, "--out", str(out)]
    train += ["--no-progress", *args.set]
    for key, value in {
        "train.iterations": args.iterations,
        "train.log_every": args.log_every,
        "train.val_every": args.iterations,
        "train.checkpoint_every": args.iterations,
        "train.threads": threads,
        "train.device": args.device,
    }.items():
        train += ["--set", f"{key}={value}"]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(processes)]
        command = [sys.executable, *launcher, *train]
    else:
        command = [sys.executable, *train]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [row["tasks_per_s"] for row in lines if row["event"] == "train"][1:-1]
    if not rates:
        raise SystemExit("too few log lines: raise --iterations or lower --log-every")
    return {
        "measurement": "train_scaling",
        "preset": preset,
        "processes": processes,
        "threads_per_process": threads,
        "device": args.device,
        "iterations": args.iterations,
        "tasks_per_s": statistics.median(rates),
        "tasks_per_s_windows": rates,
        "wall_s": round(wall, 1),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="omniglot-5w1s")
    parser.add_argument(
        "--configs", nargs="+", default=["1x1", "2x1", "1x2"], help="PxT: processes x threads"
    )
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--set", nargs="*", default=[], help="more --set key=value for train")
    args = parser.parse_args()
    args.set = [item for pair in args.set for item in ("--set", pair)]
    first = None
    for config in args.configs:
        processes, threads = (int(n) for n in config.split("x"))
        row = run(args.preset, processes, threads, args)
        first = first or row["tasks_per_s"]
        row["speedup"] = round(row["tasks_per_s"] / first, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
