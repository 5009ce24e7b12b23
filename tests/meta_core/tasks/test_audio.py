"""Bring your own recordings: ``meta-core train --preset audio-folder`` trains on folders of
WAV and FLAC clips, ``meta-core eval`` evaluates on the test classes and, separately, on
their held-out clips; the artifact records the preprocessing (with the train split's
statistics), the class split and the held-out patterns; augmentation touches meta-training's
clips only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from meta_core.artifact import load_artifact
from meta_core.cli import main
from meta_core.config import AudioAugment, AudioFolderFamily
from meta_core.tasks.audio import SpecAugment, audio_folder_family
from tests.utils.recordings import tone_folder

TINY = [
    "family.ways=3",
    "family.queries=2",
    "family.duration=0.5",
    "family.n_mels=16",
    "family.hop_ms=20",
    "model.hidden=8",
    "train.iterations=6",
    "train.meta_batch=4",
    "train.val_every=3",
    "train.val_tasks=8",
    "train.checkpoint_every=3",
    "train.threads=2",
]


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone_folder(tmp_path_factory.mktemp("tones") / "d", classes=20, per_class=8)


def sets(*overrides: str) -> list[str]:
    return [a for s in (*TINY, *overrides) for a in ("--set", s)]


def test_train_and_eval_an_audio_folder(tones, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "audio-folder", "--out", str(out), "--no-progress"]
    held_out = 'family.held_out=["0[567].*"]'
    assert main(args + sets(f"family.root={tones}", held_out, "name=tones")) == 0
    art = load_artifact(out)
    spec = art.manifest.preprocessing
    assert spec is not None and spec.type == "audio"
    assert art.input_shape == [1, 16, 26] and art.n_outputs == 3
    assert (spec.sample_rate, spec.n_fft, spec.hop, spec.fit) == (16000, 400, 320, "loudest")
    assert spec.mean is not None and spec.std is not None and spec.std > 0
    family = art.manifest.training.family
    assert family["held_out"] == {"patterns": ["0[567].*"], "clips_per_class": 3}
    split = family["split"]
    assert sum(len(v) for v in split.values()) == 20 and not set(split["train"]) & set(
        split["test"]
    )
    common = ["--set", "tasks=10", "--set", "steps=[0, 1]", "--no-plots"]
    assert main(["eval", str(out), *common, "--set", 'baselines=["random", "centroid"]']) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["split"] == "test"
    assert set(report["results"]) == {"maml", "random", "centroid"}
    assert 0 <= report["results"]["centroid"]["1"]["fit"]["accuracy"] <= 1
    # The held-out clips: 3 a class, enough for 1 shot and 2 queries, not 2 shots.
    with pytest.raises(ValueError, match="2 shots"):
        main(["eval", str(out), *common, "--set", "split=held_out", "--set", "shots=[2]"])
    assert main(["eval", str(out), *common, "--set", "split=held_out"]) == 0
    held = json.loads((out / "report-held_out.json").read_text())
    assert held["protocol"]["split"] == "held_out"
    assert json.loads((out / "report.json").read_text()) == report  # the test split's, kept
    assert "maml K=1" in capsys.readouterr().out


def test_a_split_the_family_has_not_is_refused(tones, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "audio-folder", "--out", str(out), "--no-progress"]
    assert main(args + sets(f"family.root={tones}", "train.iterations=1")) == 0
    with pytest.raises(ValueError, match="eval.split 'held_out': the audio_folder family has no"):
        main(["eval", str(out), "--set", "tasks=2", "--set", "split=held_out", "--no-plots"])


def test_bad_recordings_are_one_line_before_training(tones, tmp_path, capsys):
    args = ["train", "--preset", "audio-folder", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args + sets(f"family.root={tones}", "family.ways=5")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meta-core train: the val split has 3 classes of the 20 found in")
    assert "\n" not in err and not (tmp_path / "run" / "checkpoint").exists()


def test_augmentation_changes_training_clips_only(tones):
    cfg = AudioFolderFamily(
        root=str(tones),
        ways=3,
        queries=2,
        duration=0.5,
        n_mels=16,
        augment=AudioAugment(shift=0.2, noise=0.1, time_masks=1, freq_masks=1),
    )
    family = audio_folder_family(cfg)
    plain = audio_folder_family(cfg.model_copy(update={"augment": AudioAugment()}))
    assert family.augment is not None and plain.augment is None
    for split in ("val", "test"):
        a = family.sample(4, torch.Generator().manual_seed(0), split=split)
        b = plain.sample(4, torch.Generator().manual_seed(0), split=split)
        assert torch.equal(a.support_x, b.support_x)
    a = family.sample(4, torch.Generator().manual_seed(0))
    b = plain.sample(4, torch.Generator().manual_seed(0))
    assert a.support_x.shape == b.support_x.shape and not torch.equal(a.support_x, b.support_x)
    assert torch.equal(a.support_y, b.support_y)


def test_spec_augment_shifts_and_masks():
    x = torch.arange(2 * 8 * 20, dtype=torch.float32).reshape(2, 1, 8, 20) + 1
    shifted = SpecAugment(AudioAugment(shift=0.25))(x, torch.Generator().manual_seed(0))
    for i in range(2):  # a circular shift of whole frames, by at most 5
        shifts = [k for k in range(-5, 6) if torch.equal(shifted[i], x[i].roll(k, dims=-1))]
        assert len(shifts) == 1
    masked = SpecAugment(AudioAugment(time_masks=1, time_mask=4, freq_masks=1, freq_mask=3))(
        x, torch.Generator().manual_seed(1)
    )
    zero = masked == 0
    frames, bands = zero.all(dim=2).sum(dim=-1), zero.all(dim=3).sum(dim=-1)
    assert (frames <= 4).all() and (bands <= 3).all() and zero.any()
    assert torch.equal(masked[~zero], x[~zero])
