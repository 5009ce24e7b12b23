"""Task families. Adding one: write a module with a class following ``TaskFamily`` and register
a builder below (it receives the ``[family]`` table of the training config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meta_core.tasks.base import Split, TaskBatch, TaskFamily, TaskKind
from meta_core.tasks.nway import NWayKShot, pool_from_labelled
from meta_core.tasks.sinusoid import Sinusoid


def _sinusoid(cfg: dict[str, Any]) -> TaskFamily:
    return Sinusoid(
        shots=int(cfg["shots"]),
        queries=int(cfg["queries"]),
        train_shots=tuple(int(k) for k in cfg.get("train_shots", ())),
    )


def _omniglot(cfg: dict[str, Any]) -> TaskFamily:
    from meta_core.data.omniglot import omniglot_family

    return omniglot_family(
        int(cfg["ways"]),
        int(cfg["shots"]),
        int(cfg["queries"]),
        data_dir=cfg.get("data_dir") or None,
        cache_dir=cfg.get("cache_dir") or None,
    )


def _random_images(cfg: dict[str, Any]) -> TaskFamily:
    """Random 28x28 images in Omniglot's shape: for throughput benchmarks and tests only."""
    import torch

    g = torch.Generator().manual_seed(0)
    size = int(cfg.get("image_size", 28))
    classes = int(cfg.get("classes", 64))
    pools = {
        s: torch.randint(0, 256, (classes, 20, 1, size, size), generator=g, dtype=torch.uint8)
        for s in ("train", "val", "test")
    }
    return NWayKShot(
        pools,
        ways=int(cfg["ways"]),
        shots=int(cfg["shots"]),
        queries=int(cfg["queries"]),
        name="random_images",
        scale=1 / 255,
    )


FAMILIES: dict[str, Callable[[dict[str, Any]], TaskFamily]] = {
    "sinusoid": _sinusoid,
    "omniglot": _omniglot,
    "random_images": _random_images,
}


def build_family(cfg: dict[str, Any]) -> TaskFamily:
    """The family a config's ``[family]`` table names."""
    name = cfg.get("name")
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}: one of {sorted(FAMILIES)}")
    return FAMILIES[name](cfg)


__all__ = [
    "FAMILIES",
    "NWayKShot",
    "Sinusoid",
    "Split",
    "TaskBatch",
    "TaskFamily",
    "TaskKind",
    "build_family",
    "pool_from_labelled",
]
