"""Task families. Adding one: write a module with a class following ``TaskFamily``, a config
class in :mod:`meta_core.config`, and register a builder below (it receives that config)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from meta_core.config import (
    AudioFolderFamily,
    ImageFolderFamily,
    OmniglotFamily,
    RandomImagesFamily,
    SinusoidFamily,
    TableFamily,
    TextFamily,
)
from meta_core.tasks.base import Split, TaskBatch, TaskFamily, TaskKind
from meta_core.tasks.nway import NWayKShot, pool_from_labelled
from meta_core.tasks.sinusoid import Sinusoid


def _sinusoid(cfg: SinusoidFamily) -> TaskFamily:
    return Sinusoid(shots=cfg.shots, queries=cfg.queries, train_shots=tuple(cfg.train_shots))


def _omniglot(cfg: OmniglotFamily) -> TaskFamily:
    from meta_core.tasks.omniglot import omniglot_family

    return omniglot_family(
        cfg.ways,
        cfg.shots,
        cfg.queries,
        data_dir=Path(cfg.data_dir) if cfg.data_dir else None,
        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
    )


def _random_images(cfg: RandomImagesFamily) -> TaskFamily:
    """Random images in Omniglot's shape: for throughput benchmarks and tests only."""
    g = torch.Generator().manual_seed(0)
    size = cfg.image_size
    pools = {
        s: torch.randint(0, 256, (cfg.classes, 20, 1, size, size), generator=g, dtype=torch.uint8)
        for s in ("train", "val", "test")
    }
    return NWayKShot(
        pools,
        ways=cfg.ways,
        shots=cfg.shots,
        queries=cfg.queries,
        name="random_images",
        scale=1 / 255,
    )


def _image_folder(cfg: ImageFolderFamily) -> TaskFamily:
    from meta_core.tasks.folders import image_folder_family

    return image_folder_family(cfg)


def _audio_folder(cfg: AudioFolderFamily) -> TaskFamily:
    from meta_core.tasks.audio import audio_folder_family

    return audio_folder_family(cfg)


def _table(cfg: TableFamily) -> TaskFamily:
    from meta_core.tasks.tables import table_family

    return table_family(cfg)


def _text(cfg: TextFamily) -> TaskFamily:
    from meta_core.tasks.text import text_family

    return text_family(cfg)


FAMILIES: dict[type[Any], Callable[[Any], TaskFamily]] = {
    SinusoidFamily: _sinusoid,
    OmniglotFamily: _omniglot,
    RandomImagesFamily: _random_images,
    ImageFolderFamily: _image_folder,
    AudioFolderFamily: _audio_folder,
    TableFamily: _table,
    TextFamily: _text,
}


def build_family(
    cfg: SinusoidFamily
    | OmniglotFamily
    | RandomImagesFamily
    | ImageFolderFamily
    | AudioFolderFamily
    | TableFamily
    | TextFamily,
) -> TaskFamily:
    """The family a config's ``[family]`` table names."""
    return FAMILIES[type(cfg)](cfg)


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
