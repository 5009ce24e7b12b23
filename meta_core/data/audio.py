"""A class folder's recordings, decoded and turned into log-mel features once, for training
(:mod:`meta_core.data.folders` finds and splits them; :mod:`meta_core.audio` is the
preprocessing the service applies to uploads too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meta_core.audio import AudioError, check_rate, clips_to_features, read_audio
from meta_core.data.folders import DataError
from meta_core.preprocessing import AudioPreprocessing


def decode_clips(paths: list[Path], spec: AudioPreprocessing) -> np.ndarray:
    """WAV or FLAC files -> ``[n, 1, n_mels, frames]`` float32 log-mel features (not yet
    standardized), or a DataError naming the first file that cannot be read or is shorter
    than the spec's ``min_duration``."""
    clips = []
    for path in paths:
        try:
            samples, rate = read_audio(path)
            check_rate(rate, spec)
        except AudioError as exc:
            raise DataError(f"{path} {exc}") from None
        if len(samples) < spec.min_duration * rate:
            raise DataError(
                f"{path} is {len(samples) / rate:.3f} s long; clips must last at least "
                f"{spec.min_duration} s (family.min_duration)"
            )
        clips.append((samples, rate))
    features: np.ndarray = clips_to_features(clips, spec).numpy()
    return features
