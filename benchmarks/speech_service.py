"""Speech meta-model over HTTP: uvicorn on loopback with a fresh database, measured from a
client that sends WAV files as base64.

Creates N-way K-shot tasks from the held-out words of the speech meta-model's own folders (its
manifest's test split, read from the folder it was trained on: the clips of the voices it was
trained on, or with ``--held-out-voices`` only those it never heard), then reports POST /tasks
latency (p50/p99, and the server's adapt_ms: the inner loop alone), predict latency for one
clip (p50/p99), and the accuracy those predictions give on the other clips of each word. One
JSON line per measurement; nothing is asserted.

    python benchmarks/speech_service.py --root data/speech --workers 1
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
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


def held_out(model_dir: Path, root: Path, voices: bool) -> tuple[str, dict[str, list[Path]]]:
    """The model's name and its test words' clips: of the voices it trained on, or (with
    ``voices``) of its held-out ones."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    patterns = manifest["training"]["config"]["family"]["held_out"]
    clips = {}
    for word in manifest["training"]["family"]["split"]["test"]:
        files = sorted((root / word).glob("*.wav")) + sorted((root / word).glob("*.flac"))
        held = [f for f in files if any(fnmatch.fnmatchcase(f.name, p) for p in patterns)]
        clips[word] = held if voices else [f for f in files if f not in held]
    return manifest["name"], clips


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def measure(base: str, headers: dict, name: str, words: dict, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    post, adapt, predict, correct, total = [], [], [], 0, 0
    queries = min(len(c) for c in words.values()) - args.shots
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for _ in range(args.tasks):
            picked = rng.sample(sorted(words), args.ways)
            drawn = {w: rng.sample(words[w], args.shots + queries) for w in picked}
            x = [b64(f) for w in picked for f in drawn[w][: args.shots]]
            y = [w for w in picked for _ in range(args.shots)]
            start = time.perf_counter()
            r = client.post("/tasks", json={"model": name, "support": {"x": x, "y": y}})
            post.append(time.perf_counter() - start)
            r.raise_for_status()
            adapt.append(r.json()["adapt_ms"])
            task = r.json()["id"]
            for w in picked:
                for clip in drawn[w][args.shots :]:
                    body = {"x": [b64(clip)]}
                    start = time.perf_counter()
                    p = client.post(f"/tasks/{task}/predict", json=body)
                    predict.append(time.perf_counter() - start)
                    p.raise_for_status()
                    correct += p.json()["predictions"][0]["label"] == w
                    total += 1
    common = {
        "model": name,
        "ways": args.ways,
        "shots": args.shots,
        "voices": "held out" if args.held_out_voices else "trained on",
        "workers": args.workers,
    }
    print_adaptation_figures(post, adapt, predict, correct / total, common, "predict_one_clip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the folders it trained on")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "speech-keywords")
    parser.add_argument("--held-out-voices", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    args = parser.parse_args()
    name, words = held_out(args.model, args.root, args.held_out_voices)
    tmp = tempfile.mkdtemp()
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "MODEL_DIR": str(args.model.parent),
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    migrate(env)
    _, key = load_client(env)
    with running_server(env, "--workers", str(args.workers)) as base:
        measure(base, {"Authorization": f"Bearer {key}"}, name, words, args)


if __name__ == "__main__":
    main()
