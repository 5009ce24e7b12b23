"""Omniglot N-way K-shot tasks (MAML paper, W2) over the fixed character split.

Each character rotated by 0/90/180/270 degrees is a class of its own; rotations of one
character always stay in its split. The images come from :mod:`meta_core.data.omniglot`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from meta_core.data.omniglot import PREPROCESSING, load_images, read_split
from meta_core.tasks.nway import NWayKShot


def with_rotations(images: torch.Tensor) -> torch.Tensor:
    """``[C, D, H, W]`` -> ``[4C, D, 1, H, W]``: each rotation by k x 90 degrees is a new class."""
    rotated = torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)], dim=1)
    return rotated.flatten(0, 1).unsqueeze(2)


def omniglot_family(
    ways: int,
    shots: int,
    queries: int = 15,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> NWayKShot:
    """The N-way K-shot family over Omniglot's fixed split (uint8 pools, scaled on sampling)."""
    images, ids = load_images(data_dir, cache_dir)
    index = {c: i for i, c in enumerate(ids)}
    pools = {}
    for split in ("train", "val", "test"):
        rows = torch.tensor([index[c] for c in read_split(split)])
        pools[split] = with_rotations(images[rows])
    return NWayKShot(
        pools,
        ways=ways,
        shots=shots,
        queries=queries,
        name="omniglot",
        scale=PREPROCESSING.scale,
        preprocessing=PREPROCESSING,
    )
