"""Text meta-model over HTTP: uvicorn on loopback with a fresh database, measured from a client.

Creates 5-way 5-shot tasks from the held-out classes of the text meta-model's own corpus (its
manifest's test split, read from the CSV it was trained on), then reports POST /tasks latency
(p50/p99, and the server's adapt_ms: the inner loop alone), predict latency for one sentence
(p50/p99), and the accuracy those predictions give on 15 held-out sentences per class. One
JSON line per measurement; nothing is asserted.

    python benchmarks/text_service.py --csv data/wordnet/wordnet.csv --workers 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.serve import load_client, migrate, print_adaptation_figures  # noqa: E402
from tests.utils.server import running_server  # noqa: E402


def held_out(model_dir: Path, csv_path: Path, needed: int) -> tuple[str, dict[str, list[str]]]:
    """The model's name and its test classes' sentences (those with ``needed`` or more)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    family = manifest["training"]["config"]["family"]
    test = set(manifest["training"]["family"]["split"]["test"])
    sentences: dict[str, list[str]] = {}
    with csv_path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = row[family["label_column"]]
            if label in test:
                sentences.setdefault(label, []).append(row[family["text_column"]])
    return manifest["name"], {c: s for c, s in sentences.items() if len(s) >= needed}


def measure(base: str, headers: dict, name: str, classes: dict, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    post, adapt, predict, correct, total = [], [], [], 0, 0
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for _ in range(args.tasks):
            picked = rng.sample(sorted(classes), args.ways)
            drawn = {c: rng.sample(classes[c], args.shots + 15) for c in picked}
            x = [s for c in picked for s in drawn[c][: args.shots]]
            y = [c for c in picked for _ in range(args.shots)]
            start = time.perf_counter()
            r = client.post("/tasks", json={"model": name, "support": {"x": x, "y": y}})
            post.append(time.perf_counter() - start)
            r.raise_for_status()
            adapt.append(r.json()["adapt_ms"])
            task = r.json()["id"]
            for c in picked:
                for sentence in drawn[c][args.shots :]:
                    start = time.perf_counter()
                    p = client.post(f"/tasks/{task}/predict", json={"x": [sentence]})
                    predict.append(time.perf_counter() - start)
                    correct += p.json()["predictions"][0]["label"] == c
                    total += 1
    common = {"model": name, "ways": args.ways, "shots": args.shots, "workers": args.workers}
    print_adaptation_figures(post, adapt, predict, correct / total, common, "predict_one_sentence")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, required=True, help="the corpus the model trained on")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "text-minilm-10w")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    args = parser.parse_args()
    name, classes = held_out(args.model, args.csv, args.shots + 15)
    tmp = tempfile.mkdtemp()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MODEL_DIR": str(ROOT / "models"),
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    migrate(env)
    _, key = load_client(env)
    with running_server(env, "--workers", str(args.workers)) as base:
        measure(base, {"Authorization": f"Bearer {key}"}, name, classes, args)


if __name__ == "__main__":
    main()
