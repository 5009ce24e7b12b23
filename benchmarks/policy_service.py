"""Policy meta-models over HTTP: uvicorn on loopback with a fresh database, driven by the
example client (examples/navigation_client.py) on goals no run trained on.

For each model folder given (the shipped navigation-2d, and e.g. the pretrained baseline that
``meta-core eval --set save_baselines=true`` writes), the client adapts a new task to each of
``--goals`` goals drawn from the square (the same goals for every model): it rolls the task's
policy out (20 trajectories in lock step, one predict a time step), posts the rollouts for
one policy-gradient step, and rolls out again. Prints, as JSON lines, each model's average
return after 0..steps steps with its 95% interval, and the latency of a step
(``POST /tasks/{id}/examples``, p50/p99, and the server's adapt_ms) and of a 20-observation
predict (p50/p99). Nothing is asserted.

    python benchmarks/policy_service.py models/navigation-2d runs/navigation-2d/baselines/pretrained
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import load_client, migrate, percentile  # noqa: E402
from examples.navigation_client import Navigation, ServiceError, adapt  # noqa: E402
from tests.utils.server import running_server  # noqa: E402


def timed_post(client: httpx.Client, timings: dict[str, list[float]], adapt_ms: list[float]):
    """The example client's ``post``, timing each step and predict."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        r = client.post(path, json=body)
        elapsed = time.perf_counter() - start
        if r.status_code >= 400:
            raise ServiceError(f"{path}: {r.status_code} {r.json()['detail']}")
        kind = path.rsplit("/", 1)[-1]
        timings.setdefault(kind, []).append(elapsed)
        answer: dict[str, Any] = r.json()
        if kind == "examples":
            adapt_ms.append(answer["adapt_ms"])
        return answer

    return post


def measure(base: str, key: str, name: str, args: argparse.Namespace) -> None:
    goals = np.random.default_rng(args.seed).uniform(-0.5, 0.5, size=(args.goals, 2))
    timings: dict[str, list[float]] = {}
    adapt_ms: list[float] = []
    curves = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        post = timed_post(client, timings, adapt_ms)
        for i, goal in enumerate(goals):
            env = Navigation(goal)
            curves.append(
                adapt(post, name, env, steps=args.steps, trajectories=args.trajectories, seed=i)
            )
    table = np.array(curves)
    returns = {
        str(step): {
            "return": round(float(table[:, step].mean()), 3),
            "return_ci95": round(
                1.96 * float(table[:, step].std(ddof=1)) / math.sqrt(len(table)), 3
            ),
        }
        for step in range(args.steps + 1)
    }
    print(
        json.dumps(
            {"measurement": "returns", "model": name, "goals": args.goals, "returns": returns}
        )
    )
    steps, predicts = timings.get("examples", []), timings.get("predict", [])
    print(
        json.dumps(
            {
                "measurement": "latency",
                "model": name,
                "step_p50_ms": round(percentile(steps, 50) * 1000, 2),
                "step_p99_ms": round(percentile(steps, 99) * 1000, 2),
                "adapt_p50_ms": round(statistics.median(adapt_ms), 3),
                "steps": len(steps),
                "predict_20_rows_p50_ms": round(percentile(predicts, 50) * 1000, 2),
                "predict_20_rows_p99_ms": round(percentile(predicts, 99) * 1000, 2),
                "predicts": len(predicts),
                "workers": args.workers,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="policy artifact folders")
    parser.add_argument("--goals", type=int, default=40)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    names = []
    for folder in args.models:
        name = json.loads((folder / "manifest.json").read_text())["name"]
        shutil.copytree(folder, tmp / "models" / name, ignore=shutil.ignore_patterns("baselines"))
        names.append(name)
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MODEL_DIR": str(tmp / "models"),
        "LOG_LEVEL": "WARNING",
    }
    migrate(env)
    _, key = load_client(env)
    with running_server(env, "--workers", str(args.workers)) as base:
        for name in names:
            measure(base, key, name, args)


if __name__ == "__main__":
    main()
