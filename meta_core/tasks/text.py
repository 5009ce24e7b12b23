"""N-way K-shot tasks over a user's labelled sentences (:mod:`meta_core.data.text` reads them),
on a frozen pretrained encoder: every sentence is embedded once (and cached on disk, keyed by
the encoder's hash and the sentences), so meta-training and evaluation only run the network on
top. The encoder is recorded in the artifact (``TextPreprocessing``) and the service embeds
uploaded sentences with the same one."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from meta_core.config import TextFamily
from meta_core.data.folders import SPLITS, DataError
from meta_core.data.omniglot import default_cache_dir
from meta_core.data.text import read_text_dataset
from meta_core.encoders import ENCODERS, TextEncoder, load_encoder
from meta_core.preprocessing import TextPreprocessing
from meta_core.tasks.nway import NWayKShot

log = logging.getLogger(__name__)


def embeddings(encoder: TextEncoder, texts: list[str], cache_dir: Path) -> np.ndarray:
    """``texts``' embeddings ``[n, dim]`` float32, from the cache when this encoder has
    embedded exactly these sentences before."""
    key = hashlib.sha256(f"{encoder.spec.sha256}:{encoder.spec.max_tokens}".encode())
    for text in texts:
        key.update(text.encode("utf-8", "surrogatepass") + b"\0")
    path = cache_dir / "text-embeddings" / f"{key.hexdigest()}.npy"
    if path.is_file():
        cached: np.ndarray = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        if cached.shape == (len(texts), encoder.spec.dim):
            return cached
    log.info("embedding %d sentences with %s", len(texts), encoder.spec.name)
    vectors = encoder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(path)
    return vectors


def text_family(cfg: TextFamily) -> NWayKShot:
    """The family's tasks: each split's classes as a ``[classes, most, dim]`` pool of
    embeddings, padded, with each class's count."""
    if cfg.encoder not in ENCODERS:
        raise DataError(f"family.encoder {cfg.encoder!r} is not known; known: {sorted(ENCODERS)}")
    data = read_text_dataset(cfg)
    spec = TextPreprocessing(encoder=ENCODERS[cfg.encoder])
    encoder = load_encoder(spec.encoder)
    names = [name for s in SPLITS for name in data.split[s]]
    flat = [text for name in names for text in data.texts[name]]
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    vectors = torch.from_numpy(embeddings(encoder, flat, cache))
    pools, counts, start = {}, {}, 0
    most = max(len(t) for t in data.texts.values())
    for s in SPLITS:
        pool = torch.zeros(len(data.split[s]), most, spec.encoder.dim)
        sizes = []
        for c, name in enumerate(data.split[s]):
            n = len(data.texts[name])
            pool[c, :n] = vectors[start : start + n]
            sizes.append(n)
            start += n
        pools[s], counts[s] = pool, torch.tensor(sizes)
    return NWayKShot(
        pools,
        ways=cfg.ways,
        shots=cfg.shots,
        queries=cfg.queries,
        name="text",
        preprocessing=spec,
        counts=counts,
        details={
            "path": cfg.path,
            "text_column": cfg.text_column,
            "label_column": cfg.label_column,
            "group_column": cfg.group_column or None,
            "grouped": data.grouped,
            "split_seed": cfg.split_seed,
            "split": data.split,  # class names per split: never an example in two
            "left_out": data.left_out,
            "sentences": {s: sum(len(data.texts[n]) for n in data.split[s]) for s in SPLITS},
        },
    )


__all__ = ["embeddings", "text_family"]
