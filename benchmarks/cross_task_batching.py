"""Batching predictions of different tasks: which stages pay on a CPU, and the service's text
predicts with batching on and off.

``micro``: for 1, 4, 8 and 16 tasks at once, the median time of predicting them one by one
(the service's way: each task's own predictor) against batched alternatives. Conv4
(omniglot-5w1s, 5 images a task): ``torch.func.vmap`` over the tasks' stacked parameters, and,
as the floor no batching of different weights can beat, one forward of all the images through
one task's weights. The sinusoid MLP (10 rows a task): vmap, ``torch.bmm`` over stacked
weights, and NumPy's stacked ``matmul``. The text encoder (one short sentence a task, as a
one-sentence predict sends): one ``encode_tokens`` call each against one call for all. The
tasks' weights are the meta-model's plus seeded noise: distinct weights, the cost of adapted
ones; stacking them is part of each batched time (different tasks meet in each batch). Then
how far a sentence's embedding and probabilities move when it is encoded among 63 others of
varied lengths (padding changes float rounding only).

``service``: two servers on one fresh SQLite database, PREDICT_BATCHING=true and false, each
``--workers`` processes with the default pool (2 threads) and a queue large enough for the
load; text tasks of ``--clients`` clients; then predicts of one sentence each, sent to random
tasks ``--concurrency`` at once, in rounds that alternate between the servers (a slow spell of
a shared machine falls on both): requests/s, p50 and p99, the median over the rounds. The
httpx load generator runs on the same machine. One JSON line per measurement; nothing is
asserted.

    HF_HUB_OFFLINE=1 python benchmarks/cross_task_batching.py micro
    HF_HUB_OFFLINE=1 python benchmarks/cross_task_batching.py service --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch.func import functional_call, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import load_client, migrate, timed_predicts  # noqa: E402
from benchmarks.text_encoding import sentences  # noqa: E402
from meta_core.artifact import Artifact, load_artifact  # noqa: E402
from tests.utils.server import running_server  # noqa: E402

TEXT_MODEL = "text-minilm-10w"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``fn``, after one untimed call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def task_params(art: Artifact, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` tasks' weights: the meta-model's, each with its own seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    return [
        {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in art.params.items()}
        for _ in range(n)
    ]


def stacked(params: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([p[k] for p in params]) for k in params[0]}


def vmapped(art: Artifact) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The network over a task dimension: stacked parameters, one input batch per task."""
    net = art.network()
    return vmap(lambda p, x: functional_call(net, p, (x,)))


def conv4(art: Artifact, tasks: int, repeats: int) -> dict[str, Any]:
    params = task_params(art, tasks, seed=tasks)
    predictors = [art.predictor(p) for p in params]  # as the service's cache holds them
    xs = np.random.default_rng(0).random((tasks, 5, *art.row_shape), dtype=np.float32)
    batched, xs_t = vmapped(art), torch.from_numpy(xs)

    def with_vmap() -> torch.Tensor:
        with torch.inference_mode():
            return batched(stacked(params), xs_t)

    return {
        "one_by_one_ms": median_ms(
            lambda: [f(x) for f, x in zip(predictors, xs, strict=True)], repeats
        ),
        "vmap_ms": median_ms(with_vmap, repeats),
        "one_weights_all_images_ms": median_ms(
            lambda: predictors[0](xs.reshape(-1, *art.row_shape)), repeats
        ),
    }


def mlp(art: Artifact, tasks: int, repeats: int) -> dict[str, Any]:
    params = task_params(art, tasks, seed=tasks)
    predictors = [art.predictor(p) for p in params]
    xs = np.random.default_rng(0).uniform(-5, 5, (tasks, 10, 1)).astype(np.float32)
    batched, xs_t = vmapped(art), torch.from_numpy(xs)
    names = [("body.0", True), ("body.2", True), ("head", False)]

    def with_vmap() -> torch.Tensor:
        with torch.inference_mode():
            return batched(stacked(params), xs_t)

    def with_bmm() -> torch.Tensor:
        with torch.inference_mode():
            s, h = stacked(params), xs_t
            for name, relu in names:
                weight, bias = s[f"{name}.weight"], s[f"{name}.bias"].unsqueeze(1)
                h = torch.baddbmm(bias, h, weight.transpose(1, 2))
                h = torch.relu(h) if relu else h
            return h

    def with_numpy() -> np.ndarray:
        h: np.ndarray = xs
        for name, relu in names:
            weight = np.stack([p[f"{name}.weight"].numpy().T for p in params])
            bias = np.stack([p[f"{name}.bias"].numpy() for p in params])[:, None, :]
            h = np.matmul(h, weight) + bias
            h = np.maximum(h, 0) if relu else h
        return h

    return {
        "one_by_one_ms": median_ms(
            lambda: [f(x) for f, x in zip(predictors, xs, strict=True)], repeats
        ),
        "vmap_ms": median_ms(with_vmap, repeats),
        "bmm_ms": median_ms(with_bmm, repeats),
        "numpy_stacked_matmul_ms": median_ms(with_numpy, repeats),
    }


def short_sentences(n: int, seed: int) -> list[str]:
    """Seeded sentences of 4 to 25 words (a one-sentence predict's)."""
    return [s for s in sentences(4 * n + 16, seed) if len(s.split()) < 25][:n]


def text(art: Artifact, tasks: int, repeats: int) -> dict[str, Any]:
    assert art.encoder is not None
    encoder = art.encoder
    tokens = encoder.tokenize(short_sentences(tasks, seed=tasks))
    return {
        "tokens": sum(len(t) for t in tokens),
        "one_call_each_ms": median_ms(
            lambda: [encoder.encode_tokens([t]) for t in tokens], repeats
        ),
        "one_call_ms": median_ms(lambda: encoder.encode_tokens(tokens), repeats),
    }


def independence(art: Artifact) -> dict[str, Any]:
    """How far 64 sentences of varied lengths (mostly short, some past the encoder's 256
    tokens) move, encoded each alone or all in one call, through a 5-way task's head."""
    assert art.encoder is not None
    support = short_sentences(10, seed=1)
    adapted = art.adapt(torch.from_numpy(art.embed(support)), torch.arange(5).repeat_interleave(2))
    head = art.predictor(adapted)
    texts = sentences(64, seed=2)
    tokens = art.encoder.tokenize(texts)
    alone = np.concatenate([art.encoder.encode_tokens([t]) for t in tokens])
    together = art.encoder.encode_tokens(tokens)

    def probabilities(rows: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(head(rows)[:, :5]), dim=1).numpy()

    p_alone, p_together = probabilities(alone), probabilities(together)
    return {
        "measurement": "batch_independence",
        "sentences": len(texts),
        "tokens_min_max": [min(map(len, tokens)), max(map(len, tokens))],
        "embedding_max_abs_diff": float(np.abs(alone - together).max()),
        "probability_max_abs_diff": float(np.abs(p_alone - p_together).max()),
        "same_labels": bool((p_alone.argmax(1) == p_together.argmax(1)).all()),
    }


def micro(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    models = {name: load_artifact(ROOT / "models" / name) for name in args.models}
    stages = {"omniglot-5w1s": conv4, "sinusoid": mlp, TEXT_MODEL: text}
    common = {"torch_threads": torch.get_num_threads(), "repeats": args.repeats}
    for name, art in models.items():
        for tasks in args.tasks:
            row = {"measurement": "micro", "model": name, "tasks": tasks}
            print(json.dumps(row | stages[name](art, tasks, args.repeats) | common), flush=True)
    if TEXT_MODEL in models:
        print(json.dumps(independence(models[TEXT_MODEL]) | common), flush=True)


def text_tasks(base: str, keys: list[str], per_client: int) -> list[tuple[dict, str]]:
    """``per_client`` 5-way 2-shot tasks of the text meta-model for each client's key."""
    rng, made = random.Random(0), []
    pool = short_sentences(400, seed=3)
    with httpx.Client(base_url=base, timeout=60) as client:
        for key in keys:
            headers = {"Authorization": f"Bearer {key}"}
            for _ in range(per_client):
                support = {"x": rng.sample(pool, 10), "y": [f"c{i // 2}" for i in range(10)]}
                body = {"model": TEXT_MODEL, "support": support}
                r = client.post("/tasks", json=body, headers=headers)
                r.raise_for_status()
                made.append((headers, r.json()["id"]))
    return made


def service(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "PREDICT_QUEUE": str(max(args.concurrency) + 16),  # no 503s: the load is the point
    }
    migrate(env)
    keys = [load_client(env, f"client-{i}")[1] for i in range(args.clients)]
    body = {"x": short_sentences(1, seed=4)}
    rng = random.Random(1)
    with (
        running_server(env | {"PREDICT_BATCHING": "true"}, "--workers", str(args.workers)) as on,
        running_server(env | {"PREDICT_BATCHING": "false"}, "--workers", str(args.workers)) as off,
    ):
        tasks = text_tasks(on, keys, args.tasks_per_client)
        servers = {True: on, False: off}
        for base in servers.values():  # every task's model cached in each server
            asyncio.run(timed_predicts(base, list(tasks) * 2, body, 4))
        for concurrency in args.concurrency:
            rounds: dict[bool, list[dict]] = {True: [], False: []}
            for _ in range(args.rounds):
                for batching, base in servers.items():
                    queue = [rng.choice(tasks) for _ in range(args.predicts)]
                    rounds[batching].append(
                        asyncio.run(timed_predicts(base, queue, body, concurrency))
                    )
            for batching, rows in rounds.items():
                row = {
                    "measurement": "service_text_predict",
                    "predict_batching": batching,
                    "concurrency": concurrency,
                    "clients": args.clients,
                    "tasks": len(tasks),
                    "sentences_per_request": 1,
                    "rounds": len(rows),
                    "requests_per_round": args.predicts,
                }
                for figure in ("requests_per_s", "p50_ms", "p99_ms"):
                    row[figure] = round(statistics.median(r[figure] for r in rows), 2)
                    row[f"{figure}_rounds"] = [r[figure] for r in rows]
                print(json.dumps(row | {"workers": args.workers, "cpus": os.cpu_count()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True)
    m = commands.add_parser("micro", help="batched forwards against one by one, in process")
    m.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 8, 16])
    m.add_argument("--models", nargs="+", default=["omniglot-5w1s", "sinusoid", TEXT_MODEL])
    m.add_argument("--repeats", type=int, default=7, help="median of")
    m.add_argument("--threads", type=int, default=1, help="torch threads (the service's 1)")
    m.set_defaults(func=micro)
    s = commands.add_parser("service", help="text predicts over HTTP, batching on and off")
    s.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    s.add_argument("--clients", type=int, default=8)
    s.add_argument("--tasks-per-client", type=int, default=4)
    s.add_argument("--predicts", type=int, default=200, help="per round")
    s.add_argument("--rounds", type=int, default=3, help="per server and concurrency")
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=service)
    args = parser.parse_args()
    print("python benchmarks/cross_task_batching.py " + shlex.join(sys.argv[1:]), flush=True)
    args.func(args)


if __name__ == "__main__":
    main()
