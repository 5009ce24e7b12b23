"""Service benchmark: uvicorn on loopback with a fresh database, measured from a client.

Reports POST /tasks latency (sinusoid, K=10, 10 inner steps), predict requests/s with
p50/p99 at concurrency 1, 16 and 64 over 1,000 tasks (10 rows per predict), and, for each
Omniglot model served, adaptation and predict latency with PNG drawings of held-out
characters (with the accuracy they give). One JSON line per
measurement; nothing is asserted. The load generator runs on the same machine as the server:
wrk (one thread) when it is installed (`apt-get install wrk`), else an httpx client, which
costs more CPU per request and so understates the server.

    python benchmarks/serve.py --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.utils.server import free_port, wait_ready  # noqa: E402  (the tests' readiness poll)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def print_adaptation_figures(
    post: list[float],
    adapt: list[float],
    predict: list[float],
    accuracy: float,
    common: dict,
    predict_name: str,
) -> None:
    """Two JSON lines: POST /tasks latency (p50/p99 and the server's adapt_ms p50), and one
    row's predict latency with the accuracy those predictions had (text_service.py,
    speech_service.py)."""
    for row in (
        {
            "measurement": "post_tasks",
            "tasks": len(post),
            "p50_ms": round(percentile(post, 50) * 1000, 2),
            "p99_ms": round(percentile(post, 99) * 1000, 2),
            "adapt_p50_ms": round(statistics.median(adapt), 3),
        },
        {
            "measurement": predict_name,
            "requests": len(predict),
            "p50_ms": round(percentile(predict, 50) * 1000, 2),
            "p99_ms": round(percentile(predict, 99) * 1000, 2),
            "accuracy": round(accuracy, 4),
        },
    ):
        print(json.dumps(row | common), flush=True)


def sinusoid_body(rng: random.Random, k: int = 10) -> dict:
    import math

    amp, phase = rng.uniform(0.1, 5), rng.uniform(0, math.pi)
    xs = [rng.uniform(-5, 5) for _ in range(k)]
    return {
        "model": "sinusoid",
        "inner_steps": 10,
        "support": {"x": xs, "y": [amp * math.sin(x - phase) for x in xs]},
    }


async def predict_load(
    base: str, headers: dict, tasks: list[str], concurrency: int, total: int, rng: random.Random
) -> dict:
    queue = [(headers, rng.choice(tasks)) for _ in range(total)]
    body = {"x": [rng.uniform(-5, 5) for _ in range(10)]}
    return await timed_predicts(base, queue, body, concurrency)


async def timed_predicts(
    base: str, queue: list[tuple[dict, str]], body: dict, concurrency: int
) -> dict:
    """Predict ``body`` for each (headers, task id) of ``queue``, ``concurrency`` at once:
    requests/s, p50 and p99 (a 503 or 429 is retried after 10 ms, as a client would, and
    counted; its latency runs from the first try)."""
    total, latencies, retried = len(queue), list[float](), [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                headers, tid = queue.pop()
                start = time.perf_counter()
                while True:
                    r = await client.post(f"/tasks/{tid}/predict", json=body, headers=headers)
                    if r.status_code not in (429, 503):
                        break
                    retried[0] += 1
                    await asyncio.sleep(0.01)
                latencies.append(time.perf_counter() - start)
                r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "retried": retried[0],
    }


WRK_SCRIPT = """
local ids = {}
for line in io.lines(os.getenv("TASKS_FILE")) do ids[#ids + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("API_KEY")
wrk.body = os.getenv("BODY")
request = function()
  return wrk.format(nil, "/tasks/" .. ids[math.random(#ids)] .. "/predict")
end
"""


def connections_per_process(base: str) -> list[int] | None:
    """How the connections established to the server at ``base`` are spread over its
    processes, most first (read with iproute2's ``ss``; None without it)."""
    if shutil.which("ss") is None:
        return None
    port = base.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
    ).stdout
    pids = re.findall(r"pid=(\d+)", out)
    return sorted((pids.count(pid) for pid in set(pids)), reverse=True)


def wrk_load(
    base: str, key: str, tasks: list[str], concurrency: int, seconds: int, rng: random.Random
) -> dict:
    folder = Path(tempfile.mkdtemp())
    (folder / "tasks.txt").write_text("\n".join(tasks) + "\n")
    (folder / "predict.lua").write_text(WRK_SCRIPT)
    body = json.dumps({"x": [rng.uniform(-5, 5) for _ in range(10)]})
    env = os.environ | {"TASKS_FILE": str(folder / "tasks.txt"), "API_KEY": key, "BODY": body}
    split: list[list[int] | None] = []
    sampler = threading.Timer(seconds / 2, lambda: split.append(connections_per_process(base)))
    sampler.start()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(folder / "predict.lua"),
            base,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sampler.join()
    row: dict = {"load_generator": "wrk"}
    if split and split[0] is not None:
        row["connections_per_worker"] = split[0]
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            row["requests_per_s"] = float(parts[1])
        elif parts[:1] in (["50%"], ["99%"]):
            value = parts[1]
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
            unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
            row[f"p{parts[0][:-1]}_ms"] = round(float(value[: -len(unit)]) * scale[unit], 2)
        elif "requests in" in line:
            row["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            row["non_2xx"] = int(parts[-1])
    return row


def omniglot_http(
    base: str, headers: dict, model: str, ways: int, n_tasks: int, rng: random.Random
) -> dict:
    """Adaptation and prediction latency over HTTP with real PNG drawings of held-out
    characters: one PNG per class in the support set, 15 others per class predicted."""
    import base64

    from meta_core.data.omniglot import default_data_dir, read_set, read_split

    chars: dict = {}
    for name in ("images_background", "images_evaluation"):
        chars |= read_set(default_data_dir(), name)
    test = read_split("test")
    post, predict, correct, total = [], [], 0, 0
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for _ in range(n_tasks):
            picked = rng.sample(test, ways)
            draws = [[base64.b64encode(d).decode() for _, d in sorted(chars[c])] for c in picked]
            order = [rng.sample(range(20), 16) for _ in picked]
            support = [draws[i][order[i][0]] for i in range(ways)]
            start = time.perf_counter()
            r = client.post(
                "/tasks", json={"model": model, "support": {"x": support, "y": list(range(ways))}}
            )
            post.append(time.perf_counter() - start)
            r.raise_for_status()
            queries = [(draws[i][j], i) for i in range(ways) for j in order[i][1:]]
            start = time.perf_counter()
            p = client.post(f"/tasks/{r.json()['id']}/predict", json={"x": [q for q, _ in queries]})
            predict.append(time.perf_counter() - start)
            labels = [row["label"] for row in p.json()["predictions"]]
            correct += sum(a == b for a, (_, b) in zip(labels, queries, strict=True))
            total += len(queries)
    return {
        "measurement": "omniglot_http",
        "model": model,
        "ways": ways,
        "shots": 1,
        "tasks": n_tasks,
        "post_p50_ms": round(percentile(post, 50) * 1000, 2),
        "post_p99_ms": round(percentile(post, 99) * 1000, 2),
        "predict_rows": ways * 15,
        "predict_p50_ms": round(percentile(predict, 50) * 1000, 2),
        "predict_p99_ms": round(percentile(predict, 99) * 1000, 2),
        "accuracy": round(correct / total, 4),
    }


def big_png(size: int = 896) -> str:
    """A large, cheaply compressed PNG: costly to decode and resize, small to send."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.add.outer(ramp, ramp) // 2).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def fairness(base: str, light: dict, heavy: dict, task: str, seconds: int) -> dict:
    """p50/p99 of a light client's predicts (one cached sinusoid task, 10 rows, one at a time)
    and of /healthz, alone and while a heavy client's four threads send the heaviest requests
    its limits allow: 20-way adaptations of 20 896x896 PNGs (5 steps) and predicts of 60
    (896 pixels a side is the most a 28x28 meta-model takes)."""
    png = big_png()
    support = {"x": [png] * 20, "y": list(range(20))}
    with httpx.Client(base_url=base, headers=heavy, timeout=120) as client:
        r = client.post("/tasks", json={"model": "omniglot-20w1s", "support": support})
        r.raise_for_status()
        heavy_task = r.json()["id"]
    body = {"x": [random.Random(2).uniform(-5, 5) for _ in range(10)]}

    def timed(stop_after: float) -> tuple[list[float], list[float]]:
        predicts: list[float] = []
        probes: list[float] = []

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                while time.monotonic() < stop_after:
                    start = time.perf_counter()
                    client.get("/healthz").raise_for_status()
                    probes.append(time.perf_counter() - start)
                    time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        with httpx.Client(base_url=base, headers=light, timeout=60) as client:
            while time.monotonic() < stop_after:
                start = time.perf_counter()
                client.post(f"/tasks/{task}/predict", json=body).raise_for_status()
                predicts.append(time.perf_counter() - start)
        prober.join()
        return predicts, probes

    alone = timed(time.monotonic() + seconds)
    stop = threading.Event()
    statuses: list[int] = []

    def hammer(kind: str) -> None:
        with httpx.Client(base_url=base, headers=heavy, timeout=120) as client:
            while not stop.is_set():
                if kind == "predict":
                    r = client.post(f"/tasks/{heavy_task}/predict", json={"x": [png] * 60})
                else:
                    body = {"model": "omniglot-20w1s", "support": support, "inner_steps": 5}
                    r = client.post("/tasks", json=body)
                statuses.append(r.status_code)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("predict", "adapt") * 2]
    for t in threads:
        t.start()
    time.sleep(1)
    loaded = timed(time.monotonic() + seconds)
    stop.set()
    for t in threads:
        t.join()
    row: dict = {"measurement": "fairness", "seconds": seconds}
    for when, (predicts, probes) in (("alone", alone), ("beside_heavy", loaded)):
        row[f"light_predict_p50_ms_{when}"] = round(percentile(predicts, 50) * 1000, 2)
        row[f"light_predict_p99_ms_{when}"] = round(percentile(predicts, 99) * 1000, 2)
        row[f"healthz_p50_ms_{when}"] = round(percentile(probes, 50) * 1000, 2)
        row[f"healthz_p99_ms_{when}"] = round(percentile(probes, 99) * 1000, 2)
    row["heavy_statuses"] = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return row


def against_bare(base: str, key: str, task: str, args: argparse.Namespace) -> dict:
    """Predict on one cached sinusoid task against a bare FastAPI endpoint that parses the same
    body and returns the same ten floats (benchmarks/bare_app.py), both served by
    ``app.core.server.run`` with the same settings, wrk at concurrency 64. Both servers run side
    by side and are loaded in turn, ``--bare-rounds`` times each, so that a slow spell of a
    shared machine falls on both; the ratio reported is the median of the rounds' ratios. Each
    round also says how wrk's connections were spread over each server's workers."""
    rng = random.Random(1)
    body = {"x": [rng.uniform(-5, 5) for _ in range(10)]}
    answer = httpx.post(
        f"{base}/tasks/{task}/predict", json=body, headers={"Authorization": f"Bearer {key}"}
    ).json()
    port = free_port()
    env = os.environ | {"BARE_PREDICTIONS": json.dumps(answer["predictions"])}
    bare = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_app", "--port", str(port)]
        + ["--workers", str(args.workers)],
        env=env,
        cwd=ROOT,
    )
    bare_base = f"http://127.0.0.1:{port}"
    rounds: list[tuple[dict, dict]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.post(f"{bare_base}/tasks/{task}/predict", json=body)
                if r.status_code == 200:
                    assert r.json() == answer, "the bare endpoint must answer the same body"
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the bare app did not start")
            time.sleep(0.2)
        for _ in range(args.bare_rounds):
            service = wrk_load(base, key, [task], 64, args.seconds, random.Random(1))
            floor = wrk_load(bare_base, key, [task], 64, args.seconds, random.Random(1))
            rounds.append((service, floor))
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    ratios = [service["requests_per_s"] / floor["requests_per_s"] for service, floor in rounds]
    return {
        "measurement": "predict_vs_bare_endpoint",
        "concurrency": 64,
        "distinct_tasks": 1,
        "rounds": len(rounds),
        "predict_requests_per_s": [service["requests_per_s"] for service, _ in rounds],
        "bare_requests_per_s": [floor["requests_per_s"] for _, floor in rounds],
        "ratios": [round(r, 3) for r in ratios],
        "ratio": round(statistics.median(ratios), 3),
        "predict_connections_per_worker": [s.get("connections_per_worker") for s, _ in rounds],
        "bare_connections_per_worker": [f.get("connections_per_worker") for _, f in rounds],
        "predict_p50_ms": statistics.median(service["p50_ms"] for service, _ in rounds),
        "bare_p50_ms": statistics.median(floor["p50_ms"] for _, floor in rounds),
    }


def migrate(env: dict[str, str]) -> None:
    """``alembic upgrade head`` on the database ``env`` names."""
    command = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)


def app_cli(env: dict[str, str], *words: str) -> str:
    """``python -m app WORDS`` with ``env``: its output, stripped."""
    done = subprocess.run(
        [sys.executable, "-m", "app", *words],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def load_client(env: dict[str, str], name: str = "bench") -> tuple[int, str]:
    """A client for the load generator (its id and key), its request rate and in-flight limits
    lifted: the per-client limits are for fairness between clients (the fairness row measures
    them), and the load generator is one client."""
    created = app_cli(env, "clients", "create", name)
    client_id = int(created.split()[2])
    app_cli(
        env,
        *("clients", "limits", str(client_id), "--rate-per-second", "1e9"),
        *("--rate-burst", "1000000000", "--predict-in-flight", "1000"),
        *("--adapt-in-flight", "1000"),
    )
    return client_id, created.splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--create-samples", type=int, default=200)
    parser.add_argument("--predicts", type=int, default=3000, help="per level (httpx)")
    parser.add_argument("--seconds", type=int, default=10, help="per level (wrk)")
    parser.add_argument("--image-tasks", type=int, default=100, help="Omniglot tasks over HTTP")
    parser.add_argument(
        "--fairness-seconds", type=int, default=10, help="per phase; 0 skips the fairness row"
    )
    parser.add_argument(
        "--bare-rounds", type=int, default=5, help="alternations of predict and the bare endpoint"
    )
    args = parser.parse_args()
    rng = random.Random(0)
    tmp = tempfile.mkdtemp()
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "CACHE_SIZE": str(args.tasks * 2),
    }
    migrate(env)
    cli = partial(app_cli, env)

    _, key = load_client(env)
    heavy_key = cli("clients", "create", "heavy").splitlines()[-1]
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_ready(base, server, timeout=120)
        tasks, latencies, adapt_ms = [], [], []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for i in range(args.tasks):
                start = time.perf_counter()
                r = client.post("/tasks", json=sinusoid_body(rng))
                elapsed = time.perf_counter() - start
                r.raise_for_status()
                tasks.append(r.json()["id"])
                if i < args.create_samples:
                    latencies.append(elapsed)
                    adapt_ms.append(r.json()["adapt_ms"])
        common = {"cpus": os.cpu_count(), "workers": args.workers}
        print(
            json.dumps(
                {
                    "measurement": "post_tasks",
                    "model": "sinusoid",
                    "k": 10,
                    "inner_steps": 10,
                    "requests": len(latencies),
                    "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                    "p99_ms": round(percentile(latencies, 99) * 1000, 2),
                    "adapt_p50_ms": round(statistics.median(adapt_ms), 3),
                }
                | common
            ),
            flush=True,
        )
        # Warm every worker's cache: each task predicted a few times before measuring.
        asyncio.run(predict_load(base, headers, tasks, 16, len(tasks) * 3, rng))
        for concurrency in (1, 16, 64):
            if shutil.which("wrk"):
                row = wrk_load(base, key, tasks, concurrency, args.seconds, rng)
            else:
                total = args.predicts if concurrency > 1 else args.predicts // 3
                row = asyncio.run(predict_load(base, headers, tasks, concurrency, total, rng))
                row["load_generator"] = "httpx"
            print(
                json.dumps(
                    {
                        "measurement": "predict",
                        "concurrency": concurrency,
                        "distinct_tasks": len(tasks),
                        "rows_per_request": 10,
                    }
                    | row
                    | common
                ),
                flush=True,
            )
        if shutil.which("wrk"):
            print(json.dumps(against_bare(base, key, tasks[0], args) | common), flush=True)
        if args.fairness_seconds > 0:
            heavy = {"Authorization": f"Bearer {heavy_key}"}
            row = fairness(base, headers, heavy, tasks[0], args.fairness_seconds)
            print(json.dumps(row | common), flush=True)
        models = [m["name"] for m in httpx.get(f"{base}/models", headers=headers).json()]
        for model, ways in (("omniglot-5w1s", 5), ("omniglot-20w1s", 20)):
            if model in models and args.image_tasks > 0:
                print(
                    json.dumps(
                        omniglot_http(base, headers, model, ways, args.image_tasks, rng) | common
                    ),
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
