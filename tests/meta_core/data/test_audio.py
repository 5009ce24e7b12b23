"""A user's recordings: found and split by class like image folders, decoded at any rate and
channel count into the spec's log-mel features, held-out clips kept out of every split, and
every problem with the data a one-line error naming the file, class or split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meta_core.data.folders import HELD_OUT, DataError, load_folders
from meta_core.preprocessing import AudioPreprocessing
from tests.utils.recordings import encode, tone, tone_folder

SPEC = AudioPreprocessing(duration=0.5, n_mels=16)
SPLIT = (0.6, 0.2, 0.2)


def load(root: Path, **kw) -> object:
    return load_folders(
        root, SPEC, **({"ways": 2, "needed": 4, "fractions": SPLIT, "seed": 0} | kw)
    )


def test_recordings_are_split_by_class_and_decoded_once(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=10, per_class=6)
    data = load_folders(root, SPEC, ways=2, needed=4, fractions=SPLIT, seed=0)
    assert {s: len(c) for s, c in data.classes.items()} == {"train": 6, "val": 2, "test": 2}
    assert data.pools["train"].shape == (6, 6, *SPEC.input_shape)
    assert not set(data.classes["train"]) & set(data.classes["test"])
    assert HELD_OUT not in data.pools and data.grouped is False
    # Classes differ by pitch: a class's clips are closer to each other than to another's.
    pool = data.pools["train"].flatten(2)
    within = (pool[0, 0] - pool[0, 1:]).abs().mean()
    across = (pool[0, 0] - pool[1:, 0]).abs().mean()
    assert within < across


def test_held_out_clips_stay_out_of_every_split(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=10, per_class=8)
    data = load_folders(
        root, SPEC, ways=2, needed=2, fractions=SPLIT, seed=0, held_out=["00.*", "01.*"]
    )
    assert data.pools["train"].shape[1] == 6  # 8 clips, 2 held out
    assert data.pools[HELD_OUT].shape[:2] == (2, 2)  # the test classes, their held-out clips
    with pytest.raises(DataError, match=r"family.held_out \['zz\*'\] matches no file in"):
        load_folders(root, SPEC, ways=2, needed=2, fractions=SPLIT, seed=0, held_out=["zz*"])
    with pytest.raises(DataError, match=r"test class 'tone\d\d' has 2 held-out clips"):
        load_folders(root, SPEC, ways=2, needed=3, fractions=SPLIT, seed=0, held_out=["0[01].*"])
    with pytest.raises(DataError, match=r"has 6 clips besides the held-out ones; shots \+ "):
        load_folders(root, SPEC, ways=2, needed=7, fractions=SPLIT, seed=0, held_out=["0[01].*"])


def test_grouped_recordings_keep_a_speaker_within_one_split(tmp_path: Path):
    for speaker in range(5):
        tone_folder(tmp_path / "d" / f"speaker{speaker}", classes=2, per_class=4, seed=speaker)
    data = load_folders(tmp_path / "d", SPEC, ways=2, needed=3, fractions=SPLIT, seed=0)
    assert data.grouped
    speakers = {s: {c.split("/")[0] for c in data.classes[s]} for s in ("train", "val", "test")}
    assert sum(map(len, speakers.values())) == 5 and not speakers["train"] & speakers["test"]


def test_an_unreadable_clip_is_named(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=10, per_class=4)
    (root / "tone05" / "02.wav").write_bytes(b"RIFF not a wave")
    with pytest.raises(DataError, match=r"tone05/02.wav is not a readable WAV or FLAC file"):
        load(root)


def test_another_format_is_named(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=10, per_class=4)
    ogg = encode(tone(300, 0.5, 16000, rng=np.random.default_rng(0)), 16000, "OGG")
    (root / "tone03" / "01.wav").write_bytes(ogg)  # an OGG file named .wav
    with pytest.raises(DataError, match=r"tone03/01.wav is a OGG file; WAV or FLAC is needed"):
        load(root)


def test_a_too_short_clip_is_named(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=10, per_class=4)
    click = tone(300, 0.05, 16000, rng=np.random.default_rng(0))
    (root / "tone07" / "00.wav").write_bytes(encode(click, 16000))
    with pytest.raises(
        DataError, match=r"tone07/00.wav is 0.050 s long; clips must last at least 0.1 s"
    ):
        load(root)


def test_too_few_classes_or_clips(tmp_path: Path):
    root = tone_folder(tmp_path / "d", classes=6, per_class=4)
    with pytest.raises(DataError, match=r"the val split has 1 classes of the 6 found in"):
        load(root, ways=2)
    (root / "tone02" / "03.flac").unlink()
    with pytest.raises(DataError, match=r"class 'tone02' has 3 clips; shots \+ queries need 4"):
        load(root, ways=1)
    (tmp_path / "e" / "a").mkdir(parents=True)
    (tmp_path / "e" / "a" / "notes.txt").write_text("no recordings here")
    with pytest.raises(DataError, match=r"class folder .*a holds no .wav or .flac clips"):
        load(tmp_path / "e")
