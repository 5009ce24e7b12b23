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
from meta_core.encoders import ENCODERS, EncoderSpec, load_encoder
from meta_core.preprocessing import TextPreprocessing
from meta_core.tasks.nway import NWayKShot

log = logging.getLogger(__name__)


def embeddings(spec: EncoderSpec, texts: list[str], cache_dir: Path) -> np.ndarray:
    """``texts``' embeddings ``[n, dim]`` float32 by the encoder ``spec`` names. Each distinct
    sentence is encoded once per encoder: the cache (one file per encoder, keyed by each
    sentence's sha256) keeps every sentence embedded so far, so another split, class filter
    or sample of the same corpus encodes only what it has not seen, and the encoder is loaded
    only then."""
    path = cache_dir / "text-embeddings" / f"{spec.name}-{spec.sha256[:16]}-{spec.max_tokens}.npz"
    keys, vectors = _read_cache(path, spec.dim)
    index = {key: i for i, key in enumerate(keys)}
    hashes = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in index}
    if missing:
        log.info("embedding %d sentences with %s", len(missing), spec.name)
        new = load_encoder(spec).encode(list(missing.values()))
        keys, vectors = keys + list(missing), np.concatenate([vectors, new])
        index |= {key: len(index) + i for i, key in enumerate(missing)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype="S64"), vectors=vectors)
        tmp.replace(path)
    out: np.ndarray = vectors[[index[h] for h in hashes]]
    return out


def _read_cache(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """The cached sentence hashes and their embeddings (none if the file is unreadable)."""
    empty: tuple[list[str], np.ndarray] = ([], np.zeros((0, dim), dtype=np.float32))
    if not path.is_file():
        return empty
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        log.warning("%s is unreadable: encoding again", path)
        return empty
    if vectors.shape != (len(keys), dim):
        return empty
    return [k.decode() for k in keys.tolist()], vectors


def text_family(cfg: TextFamily) -> NWayKShot:
    """The family's tasks: each split's classes as a ``[classes, most, dim]`` pool of
    embeddings, padded, with each class's count."""
    if cfg.encoder not in ENCODERS:
        raise DataError(f"family.encoder {cfg.encoder!r} is not known; known: {sorted(ENCODERS)}")
    data = read_text_dataset(cfg)
    spec = TextPreprocessing(encoder=ENCODERS[cfg.encoder])
    names = [name for s in SPLITS for name in data.split[s]]
    flat = [text for name in names for text in data.texts[name]]
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    vectors = torch.from_numpy(embeddings(spec.encoder, flat, cache))
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
