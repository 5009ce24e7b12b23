"""N-way K-shot tasks over a user's image folders (:mod:`meta_core.data.folders` reads them).

The preprocessing (size, grayscale or RGB, resize filter, polarity, and optionally the train
split's per-channel mean and std) is the preset's, recorded in the artifact's manifest, and the
service applies it to uploaded images; the class split is recorded in the training record."""

from __future__ import annotations

from pathlib import Path

from meta_core.config import ImageFolderFamily
from meta_core.data.folders import load_folders
from meta_core.preprocessing import ImagePreprocessing
from meta_core.tasks.nway import NWayKShot

SCALE = 1.0 / 255.0


def image_folder_family(cfg: ImageFolderFamily) -> NWayKShot:
    spec = ImagePreprocessing(
        grayscale=cfg.channels == "grayscale",
        size=(cfg.image_size, cfg.image_size),
        resample=cfg.resample,
        invert=cfg.invert,
        scale=SCALE,
    )
    root = Path(cfg.root)
    data = load_folders(
        root,
        spec,
        ways=cfg.ways,
        needed=cfg.shots + cfg.queries,
        fractions=cfg.split,
        seed=cfg.split_seed,
    )
    if cfg.normalize:
        train = data.pools["train"].float() * SCALE  # [classes, per_class, C, H, W]
        mean = train.mean(dim=(0, 1, 3, 4))
        std = train.std(dim=(0, 1, 3, 4)).clamp_min(1e-3)
        spec = spec.model_copy(
            update={
                "mean": tuple(round(v, 6) for v in mean.tolist()),
                "std": tuple(round(v, 6) for v in std.tolist()),
            }
        )
    return NWayKShot(
        data.pools,
        ways=cfg.ways,
        shots=cfg.shots,
        queries=cfg.queries,
        name="image_folder",
        scale=SCALE,
        preprocessing=spec,
        details={
            "root": str(root),
            "grouped": data.grouped,
            "split_seed": cfg.split_seed,
            "split": data.classes,  # class names per split: never an example in two
        },
    )


__all__ = ["image_folder_family"]
