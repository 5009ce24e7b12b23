"""Predict throughput of this checkout against an earlier commit, served side by side.

Both servers run at once (`python -m app serve`, the same settings, one SQLite database migrated
by this checkout: the earlier commit must read the same schema) and wrk loads them in turn,
``--rounds`` times at each concurrency, so that a slow spell of a shared machine falls on
both. Each row says how wrk's connections were spread over each server's workers. One JSON line
per load, then one per concurrency with the medians; nothing is asserted.

    python benchmarks/ab_serve.py --against HEAD~1 --tasks 1000 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

import httpx
from serve import ROOT, free_port, load_client, migrate, sinusoid_body, wait_ready, wrk_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", required=True, help="a commit (git rev) to compare with")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=3, help="per load")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    earlier = f"{tmp}/earlier"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", earlier, args.against], cwd=ROOT, check=True
    )
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/ab.db",
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "CACHE_SIZE": str(args.tasks * 2),
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        migrate(env)
        _, key = load_client(env)
        for name, tree in (("checkout", str(ROOT)), (args.against, earlier)):
            port = free_port()
            command = [sys.executable, "-m", "app", "serve", "--port", str(port)]
            command += ["--workers", str(args.workers)]
            servers[name] = (
                subprocess.Popen(command, env=env, cwd=tree),
                f"http://127.0.0.1:{port}",
            )
        for server, base in servers.values():
            wait_ready(base, server, timeout=120)
        headers = {"Authorization": f"Bearer {key}"}
        rng = random.Random(0)
        first = next(iter(servers.values()))[1]
        with httpx.Client(base_url=first, headers=headers, timeout=60) as client:
            bodies = [sinusoid_body(rng) for _ in range(args.tasks)]
            tasks = [client.post("/tasks", json=body).json()["id"] for body in bodies]
        for _, base in servers.values():  # every worker's cache warm: a few loads of each
            wrk_load(base, key, tasks, 64, max(2, args.tasks // 500), random.Random(1))
        rates: dict[tuple[str, int], list[float]] = {}
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, (_, base) in servers.items():
                    row = wrk_load(base, key, tasks, concurrency, args.seconds, random.Random(1))
                    rates.setdefault((name, concurrency), []).append(row["requests_per_s"])
                    line = {"server": name, "round": round_, "concurrency": concurrency} | row
                    print(json.dumps(line), flush=True)
        for concurrency in args.concurrency:
            summary = {"measurement": "ab_predict", "concurrency": concurrency}
            summary |= {"tasks": args.tasks, "workers": args.workers, "cpus": os.cpu_count()}
            for name in servers:
                summary[f"{name}_median_requests_per_s"] = statistics.median(
                    rates[(name, concurrency)]
                )
            print(json.dumps(summary), flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
        subprocess.run(["git", "worktree", "remove", "--force", earlier], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
