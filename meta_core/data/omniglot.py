"""Omniglot (Lake et al. 2015) read from the official zips or an extracted folder, never downloaded.

This module reads files; the task family over them is :mod:`meta_core.tasks.omniglot`.
Preprocessing as in the MAML paper (W2): grayscale, resized to 28x28 (Lanczos), inverted so
strokes are 1 and background 0, scaled to [0, 1]. The character split (train / val / test) is a
fixed file in the repository. The decoded images are cached after the first read as one uint8
safetensors file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from meta_core.preprocessing import ImagePreprocessing, image_to_uint8

log = logging.getLogger(__name__)

SETS = ("images_background", "images_evaluation")
IMAGE_SIZE = 28
DRAWINGS = 20
SPLIT_DIR = Path(__file__).parent / "splits"
PREPROCESSING = ImagePreprocessing(
    size=(IMAGE_SIZE, IMAGE_SIZE), resample="lanczos", invert=True, scale=1.0 / 255.0
)
# The official release: github.com/brendenlake/omniglot, folder python/ (md5 as torchvision
# checks them). docs/training.md, "Omniglot", lists the sizes and sha256 of the copies this
# project is tested with.
OFFICIAL_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}


def default_data_dir() -> Path:
    """``OMNIGLOT_DIR``, else the project-local (git-ignored) ``data/omniglot``."""
    return Path(os.environ.get("OMNIGLOT_DIR", "data/omniglot"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("META_CORE_CACHE", Path.home() / ".cache" / "meta_core"))


def preprocess(image: Image.Image) -> np.ndarray:
    """One drawing -> ``[28, 28]`` uint8, strokes high (multiply by ``scale`` for [0, 1])."""
    return image_to_uint8(image, PREPROCESSING)


def read_set(root: Path, name: str) -> dict[str, list[tuple[str, bytes]]]:
    """character id -> [(file name, PNG bytes)] from ``root/name.zip`` or ``root/name/``."""
    chars: dict[str, list[tuple[str, bytes]]] = {}
    archive = root / f"{name}.zip"
    if archive.exists():
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".png"):
                    char = info.filename.rsplit("/", 1)[0]
                    chars.setdefault(char, []).append((info.filename, zf.read(info)))
    elif (root / name).is_dir():
        for path in (root / name).glob("*/*/*.png"):
            char = path.parent.relative_to(root).as_posix()
            chars.setdefault(char, []).append((path.name, path.read_bytes()))
    else:
        raise FileNotFoundError(
            f"Omniglot not found: no {name}.zip or {name}/ under {root}. Put the two official "
            f"zips, {' and '.join(OFFICIAL_MD5)} (github.com/brendenlake/omniglot, python/), "
            "there or set OMNIGLOT_DIR to their folder; nothing is downloaded"
        )
    return chars


def load_images(
    data_dir: Path | None = None, cache_dir: Path | None = None
) -> tuple[torch.Tensor, list[str]]:
    """All 1623 characters as ``[1623, 20, 28, 28]`` uint8, and their ids (sorted)."""
    data_dir = Path(data_dir or default_data_dir())
    cache = Path(cache_dir or default_cache_dir()) / f"omniglot{IMAGE_SIZE}.safetensors"
    if cache.exists():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            ids = json.loads(f.metadata()["characters"])
        return load_file(str(cache))["images"], ids
    log.info("decoding Omniglot from %s (cached afterwards in %s)", data_dir, cache)
    chars: dict[str, list[tuple[str, bytes]]] = {}
    for name in SETS:
        chars.update(read_set(data_dir, name))
    ids = sorted(chars)
    images = np.zeros((len(ids), DRAWINGS, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, char in enumerate(ids):
        files = sorted(chars[char])
        if len(files) != DRAWINGS:
            raise ValueError(f"{char} has {len(files)} drawings, expected {DRAWINGS}")
        for j, (_, data) in enumerate(files):
            images[i, j] = preprocess(Image.open(io.BytesIO(data)))
    tensor = torch.from_numpy(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"images": tensor}, str(tmp), metadata={"characters": json.dumps(ids)})
    tmp.replace(cache)
    return tensor, ids


def read_split(split: str) -> list[str]:
    """Character ids of one split, from the fixed file in the repository."""
    return (SPLIT_DIR / f"omniglot_{split}.txt").read_text().split()
