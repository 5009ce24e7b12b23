"""A user's image folders: found flat or grouped, split by class (or group) with a seed, and
every problem with the data a one-line error naming the file, class or split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meta_core.data.folders import DataError, find_classes, load_folders, split_names
from meta_core.preprocessing import ImagePreprocessing

GRAY = ImagePreprocessing(size=(16, 16), scale=1 / 255)
RGB = ImagePreprocessing(grayscale=False, size=(16, 16), scale=1 / 255)


def folder(root: Path, classes: int, per_class: int, groups: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        where = root / (f"g{c % groups}/c{c:02d}" if groups else f"c{c:02d}")
        where.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(where / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_flat_classes_are_split_by_class_with_a_seed(tmp_path: Path):
    root = folder(tmp_path / "d", classes=20, per_class=4)
    data = load_folders(root, RGB, ways=3, needed=3, fractions=(0.7, 0.15, 0.15), seed=1)
    assert {s: len(v) for s, v in data.classes.items()} == {"train": 14, "val": 3, "test": 3}
    names = [c for s in data.classes.values() for c in s]
    assert len(names) == len(set(names)) == 20  # every class in exactly one split
    assert data.pools["train"].shape == (14, 4, 3, 16, 16)
    assert data.pools["train"].dtype.is_floating_point is False
    again = load_folders(root, RGB, ways=3, needed=3, fractions=(0.7, 0.15, 0.15), seed=1)
    assert again.classes == data.classes
    other = load_folders(root, RGB, ways=3, needed=3, fractions=(0.7, 0.15, 0.15), seed=2)
    assert other.classes != data.classes
    gray = load_folders(root, GRAY, ways=3, needed=3, fractions=(0.7, 0.15, 0.15), seed=1)
    assert gray.pools["val"].shape == (3, 4, 1, 16, 16)


def test_groups_stay_within_one_split(tmp_path: Path):
    root = folder(tmp_path / "d", classes=30, per_class=3, groups=6)
    classes, grouped = find_classes(root)
    assert grouped and "g0/c00" in classes
    data = load_folders(root, GRAY, ways=3, needed=2, fractions=(0.5, 0.25, 0.25), seed=0)
    groups = {s: {c.split("/")[0] for c in v} for s, v in data.classes.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"])
    assert not groups["val"] & groups["test"]


def test_split_names_gives_each_split_one_at_least():
    split = split_names([f"c{i}" for i in range(3)], (0.9, 0.05, 0.05), seed=0)
    assert [len(split[s]) for s in ("train", "val", "test")] == [1, 1, 1]


def test_too_few_classes_for_the_ways(tmp_path: Path):
    root = folder(tmp_path / "d", classes=8, per_class=3)
    with pytest.raises(
        DataError,
        match=r"the val split has 1 classes of the 8 found in .*; "
        r"5-way tasks need at least 5 in each split",
    ):
        load_folders(root, GRAY, ways=5, needed=2, fractions=(0.7, 0.15, 0.15), seed=0)


def test_too_few_images_per_class(tmp_path: Path):
    root = folder(tmp_path / "d", classes=10, per_class=4)
    (root / "c03" / "3.png").unlink()
    with pytest.raises(DataError, match=r"class 'c03' has 3 images; shots \+ queries need 4"):
        load_folders(root, GRAY, ways=2, needed=4, fractions=(0.6, 0.2, 0.2), seed=0)


def test_an_unreadable_image_is_named(tmp_path: Path):
    root = folder(tmp_path / "d", classes=10, per_class=3)
    (root / "c05" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"c05/1.png is not a readable image"):
        load_folders(root, GRAY, ways=2, needed=2, fractions=(0.6, 0.2, 0.2), seed=0)


def test_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(DataError, match="is not a directory"):
        find_classes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        find_classes(tmp_path / "empty")
    (tmp_path / "empty" / "a").mkdir()
    with pytest.raises(DataError, match=r"class folder .*a holds no .png or .jpg images"):
        find_classes(tmp_path / "empty")
