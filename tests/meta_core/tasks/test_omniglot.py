"""Omniglot tasks: rotations as classes, pools that never mix characters across splits."""

import pytest
import torch

from meta_core.data.omniglot import PREPROCESSING, load_images, read_split
from meta_core.tasks.omniglot import omniglot_family, with_rotations
from tests.utils.omniglot import write_omniglot


def test_rotations_are_classes(tmp_path):
    write_omniglot(tmp_path / "data", alphabets=1, characters=2)
    images, _ = load_images(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    rotated = with_rotations(images[:2])
    assert rotated.shape == (8, 20, 1, 28, 28)
    for k in range(4):
        assert torch.equal(rotated[k, :, 0], torch.rot90(images[0], k, dims=(-2, -1)))
    assert torch.equal(rotated[4, :, 0], images[1])


@pytest.mark.omniglot
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
    assert family.preprocessing == PREPROCESSING
