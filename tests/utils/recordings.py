"""Recordings a test can make: tones as WAV or FLAC bytes, and folders of them (a class per
pitch, clips at several sample rates and lengths, some stereo, some FLAC), so the audio path
is tested without any data outside the repository; and the skip (or, under
``REQUIRE_ESPEAK=1``, the failure) of tests that need Debian's espeak-ng."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import soundfile

from tests.utils.text import require

ESPEAK_MISSING = "needs espeak-ng (speech synthesis): apt-get install espeak-ng"


def require_espeak() -> None:
    """Skip (or, under REQUIRE_ESPEAK=1, fail) without espeak-ng on the PATH."""
    require(shutil.which("espeak-ng") is not None, "REQUIRE_ESPEAK", ESPEAK_MISSING)


def tone(
    freq: float, seconds: float, rate: int, *, rng: np.random.Generator, channels: int = 1
) -> np.ndarray:
    """A tone of ``freq`` Hz with slight vibrato and a little noise, ``[frames, channels]``."""
    t = np.arange(round(seconds * rate)) / rate
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    x = 0.3 * np.sin(2 * np.pi * freq * wobble * t) + 0.01 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def tone_folder(root: Path, classes: int = 12, per_class: int = 8, seed: int = 0) -> Path:
    """``root/toneNN/<i>.wav|flac``: class ``c`` a tone of 200 * 1.25^c Hz, its clips 0.4 to
    1.2 s long at 16, 22.05 or 8 kHz, every fourth stereo, odd ones FLAC."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"tone{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            rate = (16000, 22050, 8000)[i % 3]
            x = tone(
                200 * 1.25**c, rng.uniform(0.4, 1.2), rate, rng=rng, channels=2 if i % 4 == 3 else 1
            )
            suffix = "flac" if i % 2 else "wav"
            (folder / f"{i:02d}.{suffix}").write_bytes(encode(x, rate, suffix.upper()))
    return root
