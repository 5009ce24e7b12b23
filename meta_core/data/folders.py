"""A user's image folders as an N-way K-shot dataset: ``ROOT/<class>/*.png|jpg``, or
``ROOT/<group>/<class>/...`` where each group (an alphabet, a product line) stays within one
split, as Omniglot's alphabets do.

Classes (or groups), never examples, are split into train / val / test by a seeded shuffle;
the split is returned (and recorded in the run and the artifact's manifest). Every image is
decoded and preprocessed once, with the preset's preprocessing (the artifact's, which the
service applies to uploads). Everything is checked before training starts, and a problem is
one line naming the file, class or split.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from meta_core.preprocessing import ImagePreprocessing, image_to_uint8

log = logging.getLogger(__name__)
EXTENSIONS = {".png", ".jpg", ".jpeg"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The user's data cannot train the preset: one line saying what and where."""


@dataclass(frozen=True)
class FolderDataset:
    """Per split: ``[classes, per_class, C, H, W]`` uint8 pools, and the class names."""

    pools: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    grouped: bool


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def find_classes(root: Path) -> tuple[dict[str, list[Path]], bool]:
    """Class name -> its image files, and whether the classes are grouped: in
    ``root/<group>/<class>/`` (the class name is then ``group/class``)."""
    if not root.is_dir():
        raise DataError(f"family.root {root} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/*.png)")
    grouped = all(not _images(d) and any(c.is_dir() for c in d.iterdir()) for d in subdirs)
    classes: dict[str, list[Path]] = {}
    for d in subdirs:
        if grouped:
            for c in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                classes[f"{d.name}/{c.name}"] = _images(c)
        else:
            classes[d.name] = _images(d)
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(
            f"class folder {root / empty[0]} holds no .png or .jpg images"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
        )
    return classes, grouped


def split_names(
    names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[str]]:
    """A seeded shuffle of ``names`` cut into train / val / test by ``fractions``; each split
    gets at least one name when there are three or more."""
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def load_folders(
    root: Path,
    spec: ImagePreprocessing,
    *,
    ways: int,
    needed: int,
    fractions: tuple[float, float, float],
    seed: int,
) -> FolderDataset:
    """Read, check and preprocess ``root``: every split must have at least ``ways`` classes,
    every class at least ``needed`` (shots + queries) images, every image must decode."""
    classes, grouped = find_classes(root)
    few = {name: len(files) for name, files in classes.items() if len(files) < needed}
    if few:
        name, count = next(iter(few.items()))
        raise DataError(
            f"class {name!r} has {count} images; shots + queries need {needed} per class"
            + (f" ({len(few) - 1} more classes have too few)" if len(few) > 1 else "")
        )
    if grouped:
        groups = sorted({name.split("/")[0] for name in classes})
        by_group = split_names(groups, fractions, seed)
        split = {s: sorted(c for c in classes if c.split("/")[0] in by_group[s]) for s in SPLITS}
    else:
        split = split_names(list(classes), fractions, seed)
    for s in SPLITS:
        if len(split[s]) < ways:
            what = "groups' classes" if grouped else "classes"
            raise DataError(
                f"the {s} split has {len(split[s])} {what} of the {len(classes)} found in "
                f"{root}; {ways}-way tasks need at least {ways} in each split: add classes "
                "or lower family.ways"
            )
    per_class = min(len(files) for files in classes.values())
    pools = {}
    for s in SPLITS:
        arrays = []
        for name in split[s]:
            files = classes[name][:per_class]
            arrays.append(np.stack([_decode(f, spec) for f in files]))
        pools[s] = torch.from_numpy(np.stack(arrays))
    log.info(
        "%s: %d classes (%s), %d images each; split %s",
        root,
        len(classes),
        "grouped" if grouped else "flat",
        per_class,
        {s: len(split[s]) for s in SPLITS},
    )
    return FolderDataset(pools, split, grouped)


def _decode(path: Path, spec: ImagePreprocessing) -> np.ndarray:
    """One image file -> ``[C, H, W]`` uint8, preprocessed (not yet scaled)."""
    try:
        with Image.open(path) as image:
            image.load()
            pixels = image_to_uint8(image, spec)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    return pixels if pixels.ndim == 3 else pixels[None]
