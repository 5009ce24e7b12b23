"""The Omniglot loader: counts, the fixed split, no overlap, rotations, the cache."""

import torch

from meta_core.data.omniglot import load_images, read_split
from meta_core.tasks.omniglot import omniglot_family, with_rotations


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
    rotated = with_rotations(images[:2])
    assert rotated.shape == (8, 20, 1, 28, 28)
    assert torch.equal(rotated[1, :, 0], torch.rot90(images[0], 1, dims=(-2, -1)))


def test_family_pools_never_mix_characters():
    family = omniglot_family(ways=5, shots=1)
    assert {s: p.shape[0] for s, p in family.pools.items()} == {
        "train": 4400,
        "val": 400,
        "test": 1692,
    }
    images, ids = load_images()
    index = {c: i for i, c in enumerate(ids)}
    test_first = images[index[read_split("test")[0]]]
    assert torch.equal(family.pools["test"][0, :, 0], test_first)
    batch = family.sample(4, torch.Generator().manual_seed(0), split="test")
    assert batch.support_x.shape == (4, 5, 1, 28, 28)
    assert batch.query_x.shape == (4, 75, 1, 28, 28)
    assert batch.support_x.min() >= 0.0 and batch.support_x.max() <= 1.0
