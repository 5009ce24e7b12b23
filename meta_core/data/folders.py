"""A user's folders of images or recordings as an N-way K-shot dataset:
``ROOT/<class>/*.png|jpg`` (or ``*.wav|flac``), or ``ROOT/<group>/<class>/...`` where each
group (an alphabet, a product line, a speaker) stays within one split, as Omniglot's
alphabets do.

Classes (or groups), never examples, are split into train / val / test by a seeded shuffle;
the split is returned (and recorded in the run and the artifact's manifest). Every file is
decoded and preprocessed once, with the preset's preprocessing (the artifact's, which the
service applies to uploads). Everything is checked before training starts, and a problem is
one line naming the file, class or split. Recordings matching ``held_out`` patterns (a voice,
a microphone) are kept out of every split and gathered, for the test split's classes, into a
``held_out`` pool: the same unseen classes, in conditions training never heard.
"""

from __future__ import annotations

import fnmatch
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from meta_core.preprocessing import AudioPreprocessing, ImagePreprocessing, image_to_uint8

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
HELD_OUT = "held_out"
IMAGES = frozenset({".png", ".jpg", ".jpeg"})
AUDIO = frozenset({".wav", ".flac"})


class DataError(ValueError):
    """The user's data cannot train the preset: one line saying what and where."""


@dataclass(frozen=True)
class Reader:
    """One kind of example file: its extensions, what they are called in messages, and how a
    class's files become ``[n, *shape]`` arrays (decoded and preprocessed, or a DataError)."""

    extensions: frozenset[str]
    noun: str  # "images", "clips"
    listed: str  # the extensions as messages name them
    decode: Callable[[list[Path]], np.ndarray]


def reader(spec: ImagePreprocessing | AudioPreprocessing) -> Reader:
    """The files ``spec`` reads: images (uint8, not yet scaled) or recordings (log-mel
    features, not yet standardized)."""
    if isinstance(spec, AudioPreprocessing):
        from meta_core.data.audio import decode_clips

        return Reader(
            AUDIO,
            "clips",
            ".wav or .flac",
            lambda paths: decode_clips(paths, spec),
        )
    return Reader(
        IMAGES,
        "images",
        ".png or .jpg",
        lambda paths: np.stack([_decode(p, spec) for p in paths]),
    )


@dataclass(frozen=True)
class FolderDataset:
    """Per split: ``[classes, per_class, C, H, W]`` uint8 pools, and the class names."""

    pools: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    grouped: bool


def _files(folder: Path, extensions: frozenset[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def find_classes(
    root: Path, extensions: frozenset[str] = IMAGES, listed: str = ".png or .jpg images"
) -> tuple[dict[str, list[Path]], bool]:
    """Class name -> its files (those with ``extensions``), and whether the classes are
    grouped: in ``root/<group>/<class>/`` (the class name is then ``group/class``)."""
    if not root.is_dir():
        raise DataError(f"family.root {root} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        example = min(extensions)
        raise DataError(f"{root} has no class folders (expected {root}/<class>/*{example})")
    grouped = all(
        not _files(d, extensions) and any(c.is_dir() for c in d.iterdir()) for d in subdirs
    )
    classes: dict[str, list[Path]] = {}
    for d in subdirs:
        if grouped:
            for c in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                classes[f"{d.name}/{c.name}"] = _files(c, extensions)
        else:
            classes[d.name] = _files(d, extensions)
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(
            f"class folder {root / empty[0]} holds no {listed}"
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


def held_out_files(
    classes: dict[str, list[Path]], patterns: Sequence[str]
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Each class's files split by ``patterns`` (globs on the file name): (kept, held out)."""
    if not patterns:
        return classes, {}

    def out(path: Path) -> bool:
        return any(fnmatch.fnmatchcase(path.name, p) for p in patterns)

    kept = {name: [f for f in files if not out(f)] for name, files in classes.items()}
    held = {name: [f for f in files if out(f)] for name, files in classes.items()}
    return kept, held


def load_folders(
    root: Path,
    spec: ImagePreprocessing | AudioPreprocessing,
    *,
    ways: int,
    needed: int,
    fractions: tuple[float, float, float],
    seed: int,
    held_out: Sequence[str] = (),
) -> FolderDataset:
    """Read, check and preprocess ``root``: every split must have at least ``ways`` classes,
    every class at least ``needed`` (shots + queries) files, every file must decode. Files
    whose names match a ``held_out`` pattern form the ``held_out`` pool (the test classes'
    held-out files), which needs ``needed`` of them in each test class too."""
    kind = reader(spec)
    found, grouped = find_classes(root, kind.extensions, f"{kind.listed} {kind.noun}")
    classes, held = held_out_files(found, held_out)
    if held_out and not any(held.values()):
        raise DataError(f"family.held_out {list(held_out)} matches no file in {root}")
    few = {name: len(files) for name, files in classes.items() if len(files) < needed}
    if few:
        name, count = next(iter(few.items()))
        besides = " besides the held-out ones" if held_out else ""
        raise DataError(
            f"class {name!r} has {count} {kind.noun}{besides}; shots + queries need {needed} "
            "per class" + (f" ({len(few) - 1} more classes have too few)" if len(few) > 1 else "")
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
    pools = {s: _pool(classes, split[s], per_class, kind) for s in SPLITS}
    if held_out:
        pools[HELD_OUT] = _held_out_pool(held, split["test"], needed, held_out, kind)
    log.info(
        "%s: %d classes (%s), %d %s each%s; split %s",
        root,
        len(classes),
        "grouped" if grouped else "flat",
        per_class,
        kind.noun,
        f" (and {pools[HELD_OUT].shape[1]} held out)" if held_out else "",
        {s: len(split[s]) for s in SPLITS},
    )
    return FolderDataset(pools, split, grouped)


def _held_out_pool(
    held: dict[str, list[Path]],
    test: list[str],
    needed: int,
    patterns: Sequence[str],
    kind: Reader,
) -> torch.Tensor:
    """The test classes' held-out files, each needing ``needed`` of them."""
    files = {name: held[name] for name in test}
    fewest = min(files.items(), key=lambda item: len(item[1]))
    if len(fewest[1]) < needed:
        raise DataError(
            f"test class {fewest[0]!r} has {len(fewest[1])} held-out {kind.noun} "
            f"(family.held_out {list(patterns)}); shots + queries need {needed} per class"
        )
    return _pool(files, test, min(map(len, files.values())), kind)


def _pool(
    classes: dict[str, list[Path]], names: list[str], per_class: int, kind: Reader
) -> torch.Tensor:
    """``[classes, per_class, *shape]``: each named class's first ``per_class`` files."""
    return torch.from_numpy(np.stack([kind.decode(classes[n][:per_class]) for n in names]))


def _decode(path: Path, spec: ImagePreprocessing) -> np.ndarray:
    """One image file -> ``[C, H, W]`` uint8, preprocessed (not yet scaled)."""
    try:
        with Image.open(path) as image:
            image.load()
            pixels = image_to_uint8(image, spec)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    return pixels if pixels.ndim == 3 else pixels[None]
