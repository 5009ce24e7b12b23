"""The Omniglot reader: the format (on an archive of the same shape the tests write), the fixed
split, the cache, missing data; the counts of the real zips."""

import zipfile

import pytest
import torch

from meta_core.data.omniglot import load_images, read_set, read_split
from tests.utils.omniglot import write_omniglot


def test_split_files_are_fixed_disjoint_and_complete():
    splits = {s: read_split(s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1100, "val": 100, "test": 423}
    assert len(splits["train"]) + len(splits["val"]) == 1200  # the paper's meta-training set
    everything = [c for v in splits.values() for c in v]
    assert len(set(everything)) == 1623


def test_loader_reads_the_zips_preprocesses_and_caches(tmp_path):
    ids = write_omniglot(tmp_path / "data")
    images, read = load_images(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert read == ids and len(ids) == 12
    assert images.shape == (12, 20, 28, 28) and images.dtype == torch.uint8
    # Black strokes on white come out inverted: strokes high, most pixels background (0).
    assert (images == 0).float().mean() > 0.6 and images.max() > 200
    assert (tmp_path / "cache" / "omniglot28.safetensors").exists()
    again, ids_again = load_images(data_dir=tmp_path / "nothing", cache_dir=tmp_path / "cache")
    assert torch.equal(again, images) and ids_again == ids  # from the cache


def test_an_extracted_folder_reads_as_its_zip(tmp_path):
    write_omniglot(tmp_path / "zips", alphabets=1, characters=2)
    with zipfile.ZipFile(tmp_path / "zips" / "images_background.zip") as zf:
        zf.extractall(tmp_path / "folder")
    zipped = read_set(tmp_path / "zips", "images_background")
    extracted = read_set(tmp_path / "folder", "images_background")
    assert (
        sorted(zipped)
        == sorted(extracted)
        == [
            "images_background/Alphabet_0/character01",
            "images_background/Alphabet_0/character02",
        ]
    )
    for char in zipped:
        assert sorted((n.rsplit("/", 1)[-1], d) for n, d in zipped[char]) == sorted(extracted[char])


def test_a_character_without_twenty_drawings_is_refused(tmp_path):
    write_omniglot(tmp_path / "data", drawings=19)
    with pytest.raises(ValueError, match="has 19 drawings, expected 20"):
        load_images(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_missing_data_names_both_zips(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_images(data_dir=tmp_path / "nothing", cache_dir=tmp_path)
    message = str(err.value)
    assert "images_background.zip and images_evaluation.zip" in message
    assert "OMNIGLOT_DIR" in message and "nothing is downloaded" in message


@pytest.mark.omniglot
def test_the_real_zips_hold_every_character_of_the_split(tmp_path):
    images, ids = load_images(cache_dir=tmp_path)
    assert images.shape == (1623, 20, 28, 28) and images.dtype == torch.uint8
    assert ids == sorted(ids) and len(set(ids)) == 1623
    assert set(ids) == {c for s in ("train", "val", "test") for c in read_split(s)}
    assert sum(i.startswith("images_background/") for i in ids) == 964
    assert (images == 0).float().mean() > 0.7
