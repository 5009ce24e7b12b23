"""``meta-core data speech --out DIR``: a spoken-keyword dataset synthesised here with
espeak-ng (Debian's ``espeak-ng``; nothing is downloaded), for the speech preset
(``speech-keywords``) and the walkthrough in docs/speech.md.

``DIR/<word>/<accent>+<variant>_s<speed>_p<pitch>_<n>.wav``: each of the words in
``meta_core/data/words.txt`` (368 common English words) spoken ``clips`` times (30 by
default) by espeak-ng voices, an English accent with a voice variant, at a seeded speed
(words a minute) and pitch, after a seeded stretch of silence, with Gaussian noise at a
seeded signal-to-noise ratio of 5 to 30 dB; 16-bit mono WAV at espeak-ng's own 22,050 Hz
(training resamples). A third of each word's clips are spoken by the four
:data:`HELD_OUT_VARIANTS`, which the preset keeps out of training (:data:`HELD_OUT`, globs
on the file names): evaluation on them is on voices never heard. ``DIR/voices.json``
records the voices, the seed and the counts. The folder is written as ``DIR.partial`` and
renamed when complete; an existing ``DIR`` is replaced only if it holds such a dataset.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from meta_core.data.folders import DataError

WORDS = Path(__file__).with_name("words.txt")
# "en", not "en-gb": espeak-ng 1.51 ignores the variant of "en-gb+<variant>" (every one
# sounds as plain "en-gb"), and honours it on "en", the same British voice.
ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt", "Andy", "Annie", "croak")
HELD_OUT_VARIANTS = ("m6", "f4", "Michael", "linda")
HELD_OUT = tuple(f"*+{variant}_*" for variant in HELD_OUT_VARIANTS)
RATE = 22050  # espeak-ng's output


@dataclass(frozen=True)
class Clip:
    word: str
    accent: str
    variant: str
    speed: int  # words a minute
    pitch: int  # espeak-ng's 0-99
    silence: float  # seconds before the word
    snr_db: float
    seed: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    def name(self, n: int) -> str:
        return f"{self.voice}_s{self.speed}_p{self.pitch}_{n:02d}.wav"


@dataclass(frozen=True)
class Summary:
    """What ``meta-core data speech`` wrote (``voices.json``)."""

    words: int
    clips_per_word: int
    held_out_per_word: int
    seed: int
    sample_rate: int = RATE
    accents: list[str] = field(default_factory=lambda: list(ACCENTS))
    variants: list[str] = field(default_factory=lambda: list(TRAIN_VARIANTS))
    held_out_variants: list[str] = field(default_factory=lambda: list(HELD_OUT_VARIANTS))
    held_out_patterns: list[str] = field(default_factory=lambda: list(HELD_OUT))
    synthesiser: str = "espeak-ng"


def read_words(count: int | None = None) -> list[str]:
    words = [w for w in WORDS.read_text().split("\n") if w and not w.startswith("#")]
    return words[:count] if count else words


def plan(words: list[str], clips: int, seed: int) -> dict[str, list[Clip]]:
    """Each word's clips: a third by held-out voices (at least one), the rest by the others,
    with seeded speeds, pitches, silences and noise."""
    rng = random.Random(seed)
    held = max(1, clips // 3)
    out = {}
    for word in words:
        variants = [rng.choice(TRAIN_VARIANTS) for _ in range(clips - held)]
        variants += [HELD_OUT_VARIANTS[i % len(HELD_OUT_VARIANTS)] for i in range(held)]
        out[word] = [
            Clip(
                word,
                rng.choice(ACCENTS),
                variant,
                speed=rng.randrange(110, 231, 10),
                pitch=rng.randrange(20, 81, 5),
                silence=round(rng.uniform(0.0, 0.3), 3),
                snr_db=round(rng.uniform(5.0, 30.0), 1),
                seed=rng.randrange(2**31),
            )
            for variant in variants
        ]
    return out


def synthesise(clip: Clip, espeak: str) -> np.ndarray:
    """One clip: espeak-ng's voice, after ``silence`` seconds, with noise at ``snr_db``."""
    command = [espeak, "--stdout", "-v", clip.voice, "-s", str(clip.speed), "-p", str(clip.pitch)]
    result = subprocess.run([*command, clip.word], capture_output=True, check=True, timeout=60)
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != RATE or samples.ndim != 1 or not np.abs(samples).max() > 0:
        raise DataError(f"espeak-ng gave no speech for {clip.word!r} in voice {clip.voice}")
    rng = np.random.default_rng(clip.seed)
    speech = np.concatenate([np.zeros(round(clip.silence * RATE), np.float32), samples])
    speech = speech / np.abs(speech).max() * 0.5
    power = float(np.mean(speech**2))
    noise = rng.standard_normal(len(speech)) * np.sqrt(power / 10 ** (clip.snr_db / 10))
    clipped: np.ndarray = np.clip(speech + noise, -1, 1).astype(np.float32)
    return clipped


def write_speech(
    out: Path,
    *,
    clips: int = 30,
    words: int | None = None,
    seed: int = 0,
    workers: int = 0,
    only: Collection[str] = (),
) -> Summary:
    """Synthesise the dataset into ``out``; its summary, also written to ``out/voices.json``.
    ``only``: just these words' folders, each exactly as in the whole dataset (a test can
    make a meta-model's held-out words in seconds)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DataError("espeak-ng is not installed: apt-get install espeak-ng")
    if clips < 2:
        raise DataError(f"--clips {clips}: each word needs at least 2 clips")
    if out.exists() and any(out.iterdir()) and not (out / "voices.json").is_file():
        raise DataError(f"{out} exists and is not a speech dataset: choose another --out")
    final, out = out, out.with_name(out.name + ".partial")
    if out.exists():
        shutil.rmtree(out)
    chosen = plan(read_words(words), clips, seed)
    if only:
        chosen = {w: cs for w, cs in chosen.items() if w in only}
    jobs = [(c, out / c.word / c.name(n)) for cs in chosen.values() for n, c in enumerate(cs)]
    for word in chosen:
        (out / word).mkdir(parents=True)

    def one(job: tuple[Clip, Path]) -> None:
        clip, path = job
        soundfile.write(path, synthesise(clip, espeak), RATE, subtype="PCM_16")

    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        list(pool.map(one, jobs))  # list(): the first failure is raised here
    summary = Summary(len(chosen), clips, max(1, clips // 3), seed)
    (out / "voices.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    out.rename(final)
    return summary
