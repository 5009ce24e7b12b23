"""A client that closes the loop: it runs its own 2D-navigation environment (the MAML paper's:
a point that must reach a goal it is never told, rewarded by the negative squared distance)
and has the service adapt a policy to it from its rollouts alone.

    python examples/navigation_client.py --url http://127.0.0.1:8000 --key KEY

It creates a task of the policy meta-model (``POST /tasks`` with no trajectories: the task is
the meta-policy), rolls it out (``POST /tasks/{id}/predict`` with ``sample``, one call per
time step for every trajectory at once), sends the rollouts with the revision that collected
them (``POST /tasks/{id}/examples``) for one policy-gradient step, and rolls out again,
printing the average return after each step. With ``--goals N`` it does so for N goals drawn
from the square and prints the mean return per step with its 95% interval. It needs NumPy and
the standard library only; the service never sees the goal, only observations, actions and
rewards."""

from __future__ import annotations

import argparse
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Post = Callable[[str, dict[str, Any]], dict[str, Any]]


class ServiceError(RuntimeError):
    """The service answered with an error (its problem detail in the message)."""


def http_post(url: str, key: str, timeout: float = 60) -> Post:
    """``post(path, body)`` against the service at ``url`` with the API key ``key``."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
            raise ServiceError(f"{path}: {exc.code} {detail}") from None

    return post


@dataclass(frozen=True)
class Navigation:
    """The client's own environment: start at the origin, actions clipped to
    ``[-max_action, max_action]``, reward the negative squared distance to ``goal`` after the
    move, an episode over within ``radius`` of it or after ``horizon`` steps."""

    goal: np.ndarray
    max_action: float = 0.1
    horizon: int = 100
    radius: float = 0.01

    def step(
        self, position: np.ndarray, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = position + np.clip(action, -self.max_action, self.max_action)
        distance2 = ((position - self.goal) ** 2).sum(-1)
        return position, -distance2, distance2 < self.radius**2


def roll_out(
    post: Post, task_id: str, env: Navigation, trajectories: int, seed: int
) -> tuple[list[dict[str, Any]], float]:
    """``trajectories`` rollouts of the task's current policy, in lock step (one predict a
    time step), and their average return."""
    n = trajectories
    position = np.zeros((n, 2))
    alive = np.ones(n, dtype=bool)
    runs: list[dict[str, Any]] = [
        {"observations": [], "actions": [], "rewards": [], "dones": []} for _ in range(n)
    ]
    for t in range(env.horizon):
        live = np.flatnonzero(alive)
        if len(live) == 0:
            break
        body = {"x": position[live].tolist(), "sample": True, "seed": seed * 100_003 + t}
        answer = post(f"/tasks/{task_id}/predict", body)
        action = np.array([p["action"] for p in answer["predictions"]])
        new, reward, done = env.step(position[live], action)
        for j, i in enumerate(live):
            run = runs[i]
            run["observations"].append(position[i].tolist())
            run["actions"].append(action[j].tolist())
            run["rewards"].append(float(reward[j]))
            run["dones"].append(bool(done[j]))
        position[live] = new
        alive[live[done]] = False
    mean_return = float(np.mean([sum(run["rewards"]) for run in runs]))
    return runs, mean_return


def adapt(
    post: Post,
    model: str,
    env: Navigation,
    *,
    steps: int = 3,
    trajectories: int = 20,
    seed: int = 0,
    report: Callable[[int, float], None] | None = None,
) -> list[float]:
    """A new task adapted to ``env`` by ``steps`` policy-gradient steps, each on rollouts of
    the policy before it; the average return after 0..``steps`` steps."""
    task = post("/tasks", {"model": model})
    returns = []
    for step in range(steps + 1):
        runs, mean_return = roll_out(post, task["id"], env, trajectories, seed * 1000 + step)
        returns.append(mean_return)
        if report is not None:
            report(step, mean_return)
        if step < steps:
            body = {"trajectories": runs, "revision": task["revision"]}
            task = post(f"/tasks/{task['id']}/examples", body)
    return returns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an API key (python -m app clients add)")
    parser.add_argument("--model", default="navigation-2d")
    parser.add_argument("--goal", type=float, nargs=2, help="default: drawn from the square")
    parser.add_argument("--goals", type=int, default=1, help="adapt to this many goals")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    post = http_post(args.url, args.key)
    rng = np.random.default_rng(args.seed)
    curves = []
    for g in range(args.goals):
        goal = np.array(args.goal) if args.goal else rng.uniform(-0.5, 0.5, size=2)
        print(f"goal {g}: ({goal[0]:.3f}, {goal[1]:.3f})")
        curves.append(
            adapt(
                post,
                args.model,
                Navigation(goal),
                steps=args.steps,
                trajectories=args.trajectories,
                seed=args.seed * 10_007 + g,
                report=lambda step, r: print(f"  after {step} steps: average return {r:.2f}"),
            )
        )
    if args.goals > 1:
        table = np.array(curves)
        for step in range(args.steps + 1):
            column = table[:, step]
            ci = 1.96 * column.std(ddof=1) / math.sqrt(len(column))
            print(f"after {step} steps: {column.mean():.2f} ± {ci:.2f} over {args.goals} goals")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
