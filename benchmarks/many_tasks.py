"""Many clients' tasks on PostgreSQL: storage per task, and predictions when most are not cached.

Creates sinusoid tasks (K=10) and Omniglot 5-way 1-shot tasks (five PNG drawings each) through
the API over many clients, then reports the database's bytes per task
(``pg_total_relation_size`` of the tasks table, before and after, per task created), predict
throughput with p50/p99 for the cold path alone (one request at a time, each for a task not
read since it was created: read, decode, re-adapt if so stored), one task (always cached),
tasks drawn uniformly (mostly cache misses: the cache holds far fewer models) and
Zipf-distributed (a hot set), each against the one-task figure, and the server's memory
(resident set of its processes). ``--storage`` and ``--compression`` choose how tasks are
stored. One JSON line per measurement; nothing is asserted.

    python benchmarks/many_tasks.py --sinusoid 100000 --omniglot 20000 --clients 200

Needs the PostgreSQL of ``--server`` (default the local one, trust auth); the database
``--database`` is dropped and created afresh, unless ``--keep`` (a run that stopped after
creating tasks goes on from them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app import crud  # noqa: E402
from app.core.db import Database  # noqa: E402
from app.core.security import hash_key, new_key  # noqa: E402
from benchmarks.serve import migrate, timed_predicts  # noqa: E402
from tests.utils.omniglot import drawing  # noqa: E402
from tests.utils.server import free_port, wait_ready  # noqa: E402


def fresh_database(server: str, name: str) -> str:
    """``name`` dropped and created on ``server``; its URL."""
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"


LIFTED = {
    "rate_per_second": 1e9,
    "rate_burst": 10**9,
    "predict_in_flight": 1000,
    "adapt_in_flight": 1000,
    "max_tasks": 10**7,
    "max_stored_bytes": 2**40,
}


def clients(url: str, n: int) -> dict[int, str]:
    """``n`` clients' keys by id, made as ``python -m app clients create`` makes them (in this
    process: 200 commands would take minutes), their rate, in-flight and storage limits
    lifted (one load generator speaks for them all)."""
    db, keys = Database(url), {}
    with db.session() as session:
        for i in range(n):
            key = new_key()
            made = crud.create_client(
                session, name=f"client{i}", key_hash=hash_key(key), key_prefix=key[:10]
            )
            crud.set_limits(session, client_id=made.id, limits=LIFTED)
            keys[made.id] = key
    db.dispose()
    return keys


def rekeyed(url: str) -> dict[int, str]:
    """The database's clients, each given a new key (as ``clients rotate`` does: keys are
    stored hashed), by id."""
    db, keys = Database(url), {}
    with db.session() as session:
        for client in crud.list_clients(session):
            key = new_key()
            crud.rotate_key(
                session, client_id=client.id, key_hash=hash_key(key), key_prefix=key[:10]
            )
            keys[client.id] = key
    db.dispose()
    return keys


def kept_tasks(url: str, keys: dict[int, str], model: str) -> list[tuple[str, str]]:
    """The database's tasks of ``model`` (``--keep``), oldest first: (key, task id) pairs."""
    engine = sa.create_engine(url)
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT client_id, id FROM tasks WHERE model_name = :m ORDER BY created_at"),
            {"m": model},
        ).all()
    engine.dispose()
    return [(keys[client_id], tid) for client_id, tid in rows]


def sinusoid_body(rng: random.Random) -> dict:
    amp, phase = rng.uniform(0.1, 5), rng.uniform(0, math.pi)
    xs = [round(rng.uniform(-5, 5), 4) for _ in range(10)]
    ys = [round(amp * math.sin(x - phase), 4) for x in xs]
    return {"model": "sinusoid", "support": {"x": xs, "y": ys}}


# Omniglot-like drawings (1-bit 105x105 PNGs of strokes, as the dataset's), base64, as a
# client sends its photos: drawn once, five of them per task.
DRAWINGS = [base64.b64encode(drawing(np.random.default_rng(seed))).decode() for seed in range(500)]


def omniglot_body(rng: random.Random) -> dict:
    images = rng.sample(DRAWINGS, 5)
    return {"model": "omniglot-5w1s", "support": {"x": images, "y": list(range(5))}}


async def create_all(base: str, keys: list[str], make, n: int, args) -> list:
    """``n`` tasks from ``make(rng)`` spread over the clients: (key, task id) pairs."""
    rng = random.Random(n)
    made: list[tuple[str, str]] = []
    todo = list(range(n))
    retried = [0]
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def worker() -> None:
            while todo:
                i = todo.pop()
                key = keys[i % len(keys)]
                body = make(rng)
                while True:  # as a client would: a full pool's 503 or a 429, retried
                    r = await client.post("/tasks", json=body, headers=headers(key))
                    if r.status_code not in (429, 503):
                        break
                    retried[0] += 1
                    await asyncio.sleep(0.05)
                r.raise_for_status()
                made.append((key, r.json()["id"]))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    if retried[0]:
        print(json.dumps({"measurement": "create_retries", "retried": retried[0]}), flush=True)
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
    tasks = kept_tasks(url, keys, name)[:n]
    if len(tasks) < n:
        start = time.perf_counter()
        made = asyncio.run(create_all(base, list(keys.values()), make, n - len(tasks), args))
        seconds = time.perf_counter() - start
        tasks += made
        size, count = table_bytes(url)
        row = {"model": name, "tasks": len(made), "tasks_per_s": round(len(made) / seconds, 1)}
        row |= {"table_bytes": size, "bytes_per_task": round((size - before) / len(made))}
        print(json.dumps({"measurement": "create"} | row | {"rows_in_table": count}), flush=True)
    size, _ = table_bytes(url)
    rng = random.Random(1)
    # The cold path alone: one request at a time, each for a task no worker has read since
    # it was created (the last created are the ones the creating workers still cache).
    untouched = [(headers(key), tid) for key, tid in tasks[: min(args.cold, n // 2)]]
    row = asyncio.run(timed_predicts(base, untouched, body, 1))
    print(json.dumps({"measurement": "predict", "model": name, "draw": "cold"} | row), flush=True)
    draws = {
        "one_task": lambda: n - 1,
        "uniform": lambda: rng.randrange(len(tasks)),
        "zipf_1.1": zipf_draw(len(tasks), 1.1, rng),
    }
    one = 0.0
    for draw_name, draw in draws.items():
        if draw_name.startswith("zipf") and args.warmup:  # its steady state: the hot set cached
            warm = [(headers(key), tid) for key, tid in (tasks[draw()] for _ in range(args.warmup))]
            asyncio.run(timed_predicts(base, warm, body, args.predict_concurrency))
        queue = [(headers(key), tid) for key, tid in (tasks[draw()] for _ in range(args.predicts))]
        row = asyncio.run(timed_predicts(base, queue, body, args.predict_concurrency))
        one = one or row["requests_per_s"]
        row["of_one_task"] = round(row["requests_per_s"] / one, 2)
        print(
            json.dumps({"measurement": "predict", "model": name, "draw": draw_name} | row),
            flush=True,
        )
    return size


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sinusoid", type=int, default=20_000)
    parser.add_argument("--omniglot", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache-size", type=int, help="CACHE_SIZE, adapted models per worker (the default's)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--predicts", type=int, default=3000, help="per draw")
    parser.add_argument("--cold", type=int, default=500, help="cold predicts, one at a time")
    parser.add_argument(
        "--storage", default="auto", help="TASK_STORAGE: auto, float32, float16, bfloat16, support"
    )
    parser.add_argument("--compression", default="zlib", help="TASK_COMPRESSION: zlib, none")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="many_tasks")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the database's clients (new keys) and tasks, creating only the tasks missing",
    )
    parser.add_argument("--predict-concurrency", type=int, default=16)
    parser.add_argument(
        "--warmup", type=int, default=20_000, help="Zipf draws predicted, untimed, before its own"
    )
    parser.add_argument("--only", choices=["sinusoid", "omniglot-5w1s"], help="one family")
    args = parser.parse_args()
    url = (
        f"{args.server}/{args.database}"
        if args.keep
        else fresh_database(args.server, args.database)
    )
    env = os.environ | {
        "DATABASE_URL": url,
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "TASK_STORAGE": args.storage,
        "TASK_COMPRESSION": args.compression,
        "HF_HUB_OFFLINE": "1",
    }
    if args.cache_size is not None:
        env["CACHE_SIZE"] = str(args.cache_size)
    migrate(env)
    keys = rekeyed(url) if args.keep else clients(url, args.clients)
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
        if args.only in (None, "sinusoid"):
            sin_body = {"x": [0.5, 1.5, -2.0]}
            size = measure_family(base, url, keys, "sinusoid", sinusoid_body, sin_body, args, size)
        if args.only in (None, "omniglot-5w1s"):
            omni_body = {"x": DRAWINGS[-5:]}
            measure_family(base, url, keys, "omniglot-5w1s", omniglot_body, omni_body, args, size)
        print(json.dumps({"measurement": "server_rss", "bytes": server_rss(server.pid)}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
