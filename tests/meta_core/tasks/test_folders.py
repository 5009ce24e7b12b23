"""Bring your own images: ``meta-core data example`` writes a dataset, ``meta-core train
--preset image-folder`` trains on it (RGB or grayscale, optionally normalized), ``meta-core
eval`` evaluates it, and the artifact records the preprocessing and the class split; a bad
dataset is one line on stderr, before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meta_core.artifact import load_artifact
from meta_core.cli import main

TINY = [
    "family.queries=2",
    "model.hidden=8",
    "train.iterations=6",
    "train.meta_batch=4",
    "train.val_every=3",
    "train.val_tasks=8",
    "train.checkpoint_every=3",
    "train.threads=2",
]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example")
    assert main(["data", "example", "--out", str(out)]) == 0
    assert (out / "sentences.csv").is_file()  # the text preset's example (tasks/test_text.py)
    return out


def sets(*overrides: str) -> list[str]:
    return [a for s in (*TINY, *overrides) for a in ("--set", s)]


@pytest.mark.parametrize(
    ("channels", "size", "normalize", "shape"),
    [("rgb", 32, "true", [3, 32, 32]), ("grayscale", 28, "false", [1, 28, 28])],
)
def test_train_and_eval_an_image_folder(
    example, tmp_path, capsys, channels, size, normalize, shape
):
    out = tmp_path / "run"
    args = ["train", "--preset", "image-folder", "--out", str(out), "--no-progress"]
    args += sets(
        f"family.root={example / 'images'}",
        f'family.channels="{channels}"',
        f"family.image_size={size}",
        f"family.normalize={normalize}",
        "name=shapes",
    )
    assert main(args) == 0
    art = load_artifact(out)
    assert art.name == "shapes" and art.input_shape == shape and art.n_outputs == 5
    spec = art.manifest.preprocessing
    assert spec is not None and spec.grayscale == (channels == "grayscale")
    assert (spec.mean is not None) == (normalize == "true")
    family = art.manifest.training.family
    split = family["split"]
    assert sum(len(v) for v in split.values()) == 36 and not set(split["train"]) & set(
        split["test"]
    )
    assert family["split_seed"] == 0 and family["grouped"] is False
    assert main(["eval", str(out), "--set", "tasks=10", "--set", "steps=[0, 1]", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["results"]["maml"]["1"]["1"]["accuracy"] <= 1
    assert "maml K=1" in capsys.readouterr().out


def test_bad_data_is_one_line_before_training(example, tmp_path, capsys):
    args = ["train", "--preset", "image-folder", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args + sets(f"family.root={example / 'images'}", "family.ways=6")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meta-core train: the val split has 5 classes of the 36 found in")
    assert "\n" not in err and not (tmp_path / "run" / "checkpoint").exists()
    assert main(args + sets(f"family.root={tmp_path / 'none'}")) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_rgb_84_the_miniimagenet_convention(example):
    import torch

    from meta_core.config import ImageFolderFamily
    from meta_core.networks import build_network
    from meta_core.tasks.folders import image_folder_family

    cfg = ImageFolderFamily(root=str(example / "images"), channels="rgb", image_size=84)
    family = image_folder_family(cfg)
    batch = family.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 5, 3, 84, 84) and family.input_shape == (3, 84, 84)
    assert float(batch.support_x.min()) >= 0 and float(batch.support_x.max()) <= 1
    spec = {"type": "conv4", "in_channels": 3, "image_size": 84, "hidden": 8, "out_features": 5}
    assert build_network(spec)(batch.support_x[0]).shape == (5, 5)
