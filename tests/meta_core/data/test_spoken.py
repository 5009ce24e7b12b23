"""``meta-core data speech``: espeak-ng's words as WAV folders, seeded, with a third of each
word's clips by held-out voice variants the training preset's globs select; without
espeak-ng, one line saying how to install it."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from meta_core.cli import main
from meta_core.data import spoken
from meta_core.data.folders import DataError
from meta_core.data.spoken import HELD_OUT, HELD_OUT_VARIANTS, read_words, write_speech


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.wav"))
    }


def test_the_word_list_is_long_and_distinct():
    words = read_words()
    assert len(words) >= 300 and len(set(words)) == len(words)
    assert all(w.isalpha() and w.islower() for w in words)


@pytest.mark.espeak
def test_words_spoken_by_many_voices_with_noise(tmp_path: Path, capsys):
    out = tmp_path / "speech"
    assert main(["data", "speech", "--out", str(out), "--words", "4", "--clips", "6"]) == 0
    assert "4 words, 6 clips each (2 by the held-out voice variants" in capsys.readouterr().out
    words = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert words == sorted(read_words(4))
    summary = json.loads((out / "voices.json").read_text())
    assert summary["held_out_patterns"] == list(HELD_OUT) and summary["seed"] == 0
    for word in words:
        clips = sorted((out / word).glob("*.wav"))
        assert len(clips) == 6
        held = [c for c in clips if any(fnmatch.fnmatchcase(c.name, p) for p in HELD_OUT)]
        assert len(held) == 2  # the held-out variants, and only they, match the globs
        assert all(any(f"+{v}_" in c.name for v in HELD_OUT_VARIANTS) for c in held)
        waves = []
        for clip in clips:
            x, rate = soundfile.read(clip, dtype="float32")
            assert rate == 22050 and x.ndim == 1 and 0.2 < len(x) / rate < 3
            assert np.abs(x).max() > 0.3  # speech, not silence
            assert np.abs(x[:50]).max() > 0  # noise even before the word
            waves.append(x)
        assert len({w.tobytes() for w in waves}) == 6
    assert not (tmp_path / "speech.partial").exists()
    # The same seed writes the same bytes (over the earlier run, or afresh); another seed
    # other clips.
    before = digest(out)
    write_speech(out, clips=6, words=4)
    assert digest(out) == before
    again = tmp_path / "again"
    write_speech(again, clips=6, words=4)
    assert digest(again) == digest(out)
    other = tmp_path / "other"
    write_speech(other, clips=6, words=4, seed=1)
    assert digest(other) != digest(out)


def test_without_espeak_one_line_says_how_to_install_it(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(spoken.shutil, "which", lambda name: None)
    assert main(["data", "speech", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err == "meta-core data speech: espeak-ng is not installed: apt-get install espeak-ng\n"
    monkeypatch.setattr(spoken.shutil, "which", lambda name: "/usr/bin/espeak-ng")
    with pytest.raises(DataError, match="at least 2 clips"):
        write_speech(tmp_path / "s", clips=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("not a speech dataset")
    with pytest.raises(DataError, match="exists and is not a speech dataset"):
        write_speech(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.txt").is_file()


@pytest.mark.espeak
def test_every_accent_honours_its_variant(tmp_path: Path):
    """espeak-ng ignores the variant on some language voices ("en-gb"): each accent the
    dataset uses must sound different with two variants."""
    import shutil

    espeak = shutil.which("espeak-ng")
    assert espeak is not None
    for accent in spoken.ACCENTS:
        a, b = (
            spoken.synthesise(spoken.Clip("hello", accent, v, 160, 50, 0.0, 60.0, 0), espeak)
            for v in ("m1", "f2")
        )
        assert a.shape != b.shape or not np.array_equal(a, b), accent
