"""Text encoding throughput: ``meta_core.encoders``' ``TextEncoder.encode`` against
sentence-transformers' ``SentenceTransformer.encode`` on the same sentences, batch size and
torch threads, in one run (the repeats alternate between the two, so a busy machine slows
both alike): the best of ``--repeats`` in texts/s and tokens/s, the FLOPs the service's cost
budget counts for them per second (``flops_per_token`` a token), and how far the two
embeddings disagree (max |difference|, min cosine). The sentences are generated (seeded: mostly
short, some past the 256-token truncation) or read from a CSV column. Times are printed, never
asserted.

    python -m benchmarks.text_encoding --n 2000 --threads 2
    python -m benchmarks.text_encoding --csv reviews.csv --column text
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from meta_core.encoders import ENCODERS, MINILM, EncoderSpec, encoder_archive, load_encoder

Encode = Callable[[Sequence[str]], np.ndarray]

# Each sentence draws on the function words and one topic's words.
COMMON = "the a of to and in that is for on with as by at from never always don't isn't"
TOPICS = (
    "model data task learning network gradient step loss small large 2024 100% e-mail",
    "quick brown fox jumps over lazy dog river bank garden rain window morning evening",
    "bread soup chef oven tomato café crème naïve recipe kitchen salt butter $5 #1",
    "galaxy star violet sky planet orbit telescope zürich paris train station ticket",
    "beautiful terrible interesting complicated simple honest co-operate yesterday tomorrow",
)


def sentences(n: int, seed: int) -> list[str]:
    """Seeded sentences of varied length: 80% of 4-25 words, 15% of 25-80, 5% of 150-300
    (beyond the encoder's 256 tokens), with capitals and punctuation."""
    rng = np.random.default_rng(seed)
    common = COMMON.split()
    texts = []
    for _ in range(n):
        kind = rng.random()
        low, high = (4, 25) if kind < 0.8 else (25, 80) if kind < 0.95 else (150, 300)
        vocabulary = common + str(rng.choice(TOPICS)).split()
        words = [str(w) for w in rng.choice(vocabulary, size=int(rng.integers(low, high)))]
        words[0] = words[0].capitalize()
        texts.append(" ".join(words) + str(rng.choice([".", "!", "?", "...", ";"])))
    return texts


def csv_texts(path: Path, column: str, n: int) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path} has no column {column!r}: {reader.fieldnames}")
        return [row[column] for _, row in zip(range(n), reader, strict=False)]


def sentence_transformers_encode(spec: EncoderSpec, batch_size: int, folder: Path) -> Encode:
    """sentence-transformers' encode on the same archive, extracted to ``folder``."""
    from sentence_transformers import SentenceTransformer

    with zipfile.ZipFile(encoder_archive(spec)) as zf:
        zf.extractall(folder)
    model = SentenceTransformer(str(folder), device="cpu")

    def encode(texts: Sequence[str]) -> np.ndarray:
        vectors: np.ndarray = model.encode(
            list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return vectors

    return encode


def best_times(encoders: dict[str, Encode], texts: list[str], repeats: int) -> dict[str, float]:
    """Each encoder's best time over the repeats, after a warm-up batch; the repeats
    alternate between the encoders."""
    for encode in encoders.values():
        encode(texts[:64])
    best = dict.fromkeys(encoders, float("inf"))
    for _ in range(repeats):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default=MINILM.name)
    parser.add_argument("--n", type=int, default=2000, help="texts (default 2000)")
    parser.add_argument("--csv", type=Path, help="read the texts from this CSV ...")
    parser.add_argument("--column", help="... its column holding them")
    parser.add_argument("--seed", type=int, default=0, help="of the generated sentences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of")
    parser.add_argument("--no-reference", action="store_true", help="skip sentence-transformers")
    args = parser.parse_args(argv)
    if (args.csv is None) != (args.column is None):
        parser.error("--csv and --column go together")
    torch.set_num_threads(args.threads)
    spec = ENCODERS[args.encoder]
    texts = csv_texts(args.csv, args.column, args.n) if args.csv else sentences(args.n, args.seed)
    ours = load_encoder(spec)
    encoders: dict[str, Encode] = {
        "meta_core.encoders": lambda t: ours.encode(t, batch_size=args.batch_size)
    }
    with tempfile.TemporaryDirectory() as folder:
        if not args.no_reference:
            try:
                encoders["sentence-transformers"] = sentence_transformers_encode(
                    spec, args.batch_size, Path(folder)
                )
            except ImportError:
                print("sentence-transformers is not installed: measuring ours alone")
        best = best_times(encoders, texts, args.repeats)
        vectors = {name: encode(texts) for name, encode in encoders.items()}
    lengths = [len(ids) for ids in ours.tokenize(texts)]
    report(args, texts, lengths, ours.flops_per_token, best, vectors)


def report(
    args: argparse.Namespace,
    texts: list[str],
    lengths: list[int],
    flops_per_token: int,
    best: dict[str, float],
    vectors: dict[str, np.ndarray],
) -> None:
    """The table: the run's conditions, each encoder's figures, their agreement."""
    tokens = sum(lengths)
    spec = ENCODERS[args.encoder]
    print("python -m benchmarks.text_encoding " + shlex.join(sys.argv[1:]))
    print(
        f"{spec.name}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"batch size {args.batch_size}, best of {args.repeats}"
    )
    truncated = sum(n == spec.max_tokens for n in lengths)
    print(
        f"{len(texts)} texts, {tokens} tokens (mean {tokens / max(len(texts), 1):.1f}, "
        f"max {max(lengths, default=0)}; {truncated} truncated at {spec.max_tokens})"
    )
    print(f"{'encoder':<30}{'best s':>9}{'texts/s':>10}{'tokens/s':>10}{'counted GFLOP/s':>17}")
    for name, seconds in best.items():
        label = name
        if name == "sentence-transformers":
            label += " " + version("sentence-transformers")
        print(
            f"{label:<30}{seconds:>9.2f}{len(texts) / seconds:>10.1f}{tokens / seconds:>10.0f}"
            f"{tokens * flops_per_token / seconds / 1e9:>17.1f}"
        )
    if "sentence-transformers" in vectors:
        a, b = vectors["meta_core.encoders"], vectors["sentence-transformers"]
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        print(
            f"ours vs sentence-transformers: max |difference| {np.abs(a - b).max():.2e}, "
            f"min cosine {cosine.min():.7f}"
        )


if __name__ == "__main__":
    main()
