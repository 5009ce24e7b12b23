"""The Omniglot reader: counts, the fixed split, no overlap, the cache, missing data."""

import pytest
import torch

from meta_core.data.omniglot import load_images, read_split


def test_split_files_are_fixed_disjoint_and_complete():
    splits = {s: read_split(s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1100, "val": 100, "test": 423}
    assert len(splits["train"]) + len(splits["val"]) == 1200  # the paper's meta-training set
    everything = [c for v in splits.values() for c in v]
    assert len(set(everything)) == 1623


def test_loader_counts_cache_and_rotations(tmp_path):
    images, ids = load_images(cache_dir=tmp_path)
    assert images.shape == (1623, 20, 28, 28) and images.dtype == torch.uint8
    assert ids == sorted(ids) and len(set(ids)) == 1623
    assert set(ids) == {c for s in ("train", "val", "test") for c in read_split(s)}
    assert sum(i.startswith("images_background/") for i in ids) == 964
    # Strokes are high after inversion: most pixels are background (0).
    assert (images == 0).float().mean() > 0.7
    assert (tmp_path / "omniglot28.safetensors").exists()
    again, ids_again = load_images(cache_dir=tmp_path)  # from the cache
    assert torch.equal(again, images) and ids_again == ids


def test_missing_data_names_both_zips(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_images(data_dir=tmp_path / "nothing", cache_dir=tmp_path)
    message = str(err.value)
    assert "images_background.zip and images_evaluation.zip" in message
    assert "OMNIGLOT_DIR" in message and "nothing is downloaded" in message
