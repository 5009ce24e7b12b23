"""Many clients' tasks on PostgreSQL: storage per task, and predictions when most are not cached.

Creates sinusoid tasks (K=10) and Omniglot 5-way 1-shot tasks (five 28x28 arrays each) through
the API over many clients, then reports the database's bytes per task
(``pg_total_relation_size`` of the tasks table, before and after, per task created), predict
throughput with p50/p99 for one task (always cached), tasks drawn uniformly (mostly cache
misses: CACHE_SIZE is far below the tasks) and Zipf-distributed (a hot set), and the server's
memory (resident set of its processes). One JSON line per measurement; nothing is asserted.

    python benchmarks/many_tasks.py --sinusoid 20000 --omniglot 2000 --clients 50

Needs the PostgreSQL of ``--server`` (default the local one, trust auth); the database
``--database`` is dropped and created afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import app_cli, load_client, migrate, timed_predicts  # noqa: E402
from tests.utils.server import free_port, wait_ready  # noqa: E402


def fresh_database(server: str, name: str) -> str:
    """``name`` dropped and created on ``server``; its URL."""
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


def clients(env: dict[str, str], n: int) -> list[str]:
    """``n`` clients' keys, their rate, in-flight and storage limits lifted (one load
    generator speaks for them all)."""
    keys = []
    for i in range(n):
        client_id, key = load_client(env, f"client{i}")
        app_cli(
            env,
            *("clients", "limits", str(client_id), "--max-tasks", "10000000"),
            *("--max-stored-bytes", str(2**40)),
        )
        keys.append(key)
    return keys


def sinusoid_body(rng: random.Random) -> dict:
    amp, phase = rng.uniform(0.1, 5), rng.uniform(0, math.pi)
    xs = [round(rng.uniform(-5, 5), 4) for _ in range(10)]
    ys = [round(amp * math.sin(x - phase), 4) for x in xs]
    return {"model": "sinusoid", "support": {"x": xs, "y": ys}}


def omniglot_body(rng: random.Random) -> dict:
    images = [[[[round(rng.random(), 3) for _ in range(28)] for _ in range(28)]] for _ in range(5)]
    return {"model": "omniglot-5w1s", "support": {"x": images, "y": list(range(5))}}


async def create_all(base: str, keys: list[str], make, n: int, concurrency: int) -> list:
    """``n`` tasks from ``make(rng)`` spread over the clients: (key, task id) pairs."""
    rng = random.Random(n)
    made: list[tuple[str, str]] = []
    todo = list(range(n))
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def worker() -> None:
            while todo:
                i = todo.pop()
                key = keys[i % len(keys)]
                r = await client.post(
                    "/tasks", json=make(rng), headers={"Authorization": f"Bearer {key}"}
                )
                r.raise_for_status()
                made.append((key, r.json()["id"]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return made


def zipf_draw(n: int, s: float, rng: random.Random):
    """Indices 0..n-1 with P(k) proportional to 1 / (k + 1)^s, in a shuffled order of tasks."""
    weights = [1 / (k + 1) ** s for k in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)

    def draw() -> int:
        return order[bisect.bisect(cumulative, rng.random() * total)]

    return draw


def table_bytes(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as c:
        size = c.execute(sa.text("SELECT pg_total_relation_size('tasks')")).scalar_one()
        count = c.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one()
    engine.dispose()
    return int(size), int(count)


def server_rss(pid: int) -> int:
    """Resident bytes of the server and its worker processes (Linux /proc)."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    )
    return sum(int(v) for v in out.stdout.split()) * 1024


def measure_family(base, url, keys, name, make, body, args, before) -> int:
    """Create the family's tasks, report their bytes, then predicts under each draw; the
    table's bytes after."""
    n = args.sinusoid if name == "sinusoid" else args.omniglot
    start = time.perf_counter()
    tasks = asyncio.run(create_all(base, keys, make, n, args.concurrency))
    seconds = time.perf_counter() - start
    size, count = table_bytes(url)
    print(
        json.dumps(
            {
                "measurement": "create",
                "model": name,
                "tasks": n,
                "tasks_per_s": round(n / seconds, 1),
                "table_bytes": size,
                "bytes_per_task": round((size - before) / n),
                "rows_in_table": count,
            }
        ),
        flush=True,
    )
    rng = random.Random(1)
    draws = {
        "one_task": lambda: 0,
        "uniform": lambda: rng.randrange(len(tasks)),
        "zipf_1.1": zipf_draw(len(tasks), 1.1, rng),
    }
    for draw_name, draw in draws.items():
        queue = [
            ({"Authorization": f"Bearer {key}"}, tid)
            for key, tid in (tasks[draw()] for _ in range(args.predicts))
        ]
        row = asyncio.run(timed_predicts(base, queue, body, args.concurrency))
        print(
            json.dumps({"measurement": "predict", "model": name, "draw": draw_name} | row),
            flush=True,
        )
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sinusoid", type=int, default=20_000)
    parser.add_argument("--omniglot", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-size", type=int, default=1000, help="adapted models per worker")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--predicts", type=int, default=3000, help="per draw")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="many_tasks")
    args = parser.parse_args()
    url = fresh_database(args.server, args.database)
    env = os.environ | {
        "DATABASE_URL": url,
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "CACHE_SIZE": str(args.cache_size),
        "HF_HUB_OFFLINE": "1",
    }
    migrate(env)
    keys = clients(env, args.clients)
    port = free_port()  # its own server, not tests.utils.server's: its pid gives its memory
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, timeout=180)
        size, _ = table_bytes(url)
        sin_body = {"x": [0.5, 1.5, -2.0]}
        size = measure_family(base, url, keys, "sinusoid", sinusoid_body, sin_body, args, size)
        image = [[[0.0] * 28 for _ in range(28)]]
        omni_body = {"x": [image] * 5}
        measure_family(base, url, keys, "omniglot-5w1s", omniglot_body, omni_body, args, size)
        print(json.dumps({"measurement": "server_rss", "bytes": server_rss(server.pid)}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
