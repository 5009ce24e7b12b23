"""An adaptation's real peak memory against the service's estimate (``Artifact.adapt_memory``,
checked against MAX_ADAPT_BYTES). Each case runs in a fresh process: a meta-model loaded and
warmed up as the service does, then one adaptation (``app.services.adaptation.adapt``, on a pool
thread as the service runs it) on random rows; its peak is the growth of the process's peak
resident memory (VmHWM, reset through /proc/self/clear_refs first). One JSON line a case.

    python -m benchmarks.adapt_memory --model omniglot-5w1s --rows 100 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def status(key: str) -> int:
    """A /proc/self/status figure (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def one_case(model: str, rows: int, query: int, steps: int) -> dict[str, object]:
    """The measurement itself, in this process (``--child``)."""
    from app.services.adaptation import adapt
    from app.services.inputs import AdaptationRequest
    from meta_core.artifact import load_artifact

    torch.set_num_threads(1)
    meta_model = load_artifact(ROOT / "models" / model)
    labels = list(range(meta_model.n_outputs))

    def examples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, *meta_model.row_shape)
        if meta_model.task_kind == "classification":
            return x, torch.arange(n) % meta_model.n_outputs
        return x, torch.rand(n, meta_model.n_outputs)

    pool = ThreadPoolExecutor(1)
    warm = AdaptationRequest(*examples(2), None, labels, 1, None)
    pool.submit(adapt, meta_model, warm).result()
    estimate = meta_model.adapt_memory.peak(rows, query, steps)
    support = AdaptationRequest(
        *examples(rows), examples(query) if query else None, labels, steps, None
    )
    base = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    pool.submit(adapt, meta_model, support).result()
    peak = status("VmHWM") - base
    return {
        "measurement": "adapt_memory",
        "model": model,
        "support": rows,
        "query": query,
        "steps": steps,
        "base_rss_mib": round(base / 2**20, 1),
        "peak_mib": round(peak / 2**20, 1),
        "estimate_mib": round(estimate / 2**20, 1),
        "peak_per_row_mib": round(peak / 2**20 / max(rows, query, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="omniglot-5w1s")
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--query", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_case(args.model, args.rows[0], args.query, args.steps)))
        return
    for rows in args.rows:
        command = [sys.executable, "-m", "benchmarks.adapt_memory", "--child"]
        command += ["--model", args.model, "--rows", str(rows)]
        command += ["--query", str(args.query), "--steps", str(args.steps)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
