"""Recordings sent as base64 WAV or FLAC (plain or as a data URL), decoded within bounds and
turned into the network's input exactly as in training (the artifact's ``preprocessing``,
computed by :mod:`meta_core.audio`: mono, resampled, fitted to the model's duration, log-mel,
standardized).

As with images, a recording's bytes say little about its cost (ten seconds of silence on
eight channels at 96 kHz is a FLAC of a few kilobytes), so every bound is checked on the
headers, before any sample is decoded: the container, the sample rate (and the resampling
filter it needs), the channels, the duration, and the samples of all of one request's
recordings together (and their rates' filters), which also count against the caller's cost
budget."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.services.limits import spend_request
from app.services.uploads import file_bytes
from meta_core.audio import FORMATS, MAX_FILTER, UNKNOWN_LENGTH, clips_to_array, filter_size
from meta_core.preprocessing import AudioPreprocessing

# soundfile's errors (LibsndfileError is a RuntimeError), and NumPy's for a header whose
# sizes no array can hold.
UNDECODABLE = (RuntimeError, TypeError, ValueError)
# Rates whose resampling filter (meta_core.audio.filter_size) is over MAX_FILTER are refused:
# within it, resampling costs at most about 1,030 multiply-adds per input sample (11,025 Hz:
# 660; 44.1 kHz: 172), and making the filter (once per rate, cached) at most 80 ms, up to
# 150 ns an entry, about as long as decoding a sample: each rate's filter counts its entries
# as samples.


@dataclass
class AudioLimits:
    """The bounds on one request's recordings, and the samples they decode so far: make one
    per request (:meth:`of`). ``cost``, if given, refuses (422) a request whose samples, all
    of its recordings' so far, would put it over its cost budget."""

    max_bytes: int  # one encoded recording
    min_rate: int  # Hz
    max_rate: int  # Hz
    max_seconds: float  # one recording
    max_channels: int
    max_request_samples: int  # frames x channels of all the request's recordings, and filters
    cost: Callable[[int], None] | None = None
    decoded: int = 0

    @classmethod
    def of(cls, settings: Settings, cost: Callable[[int], None] | None = None) -> AudioLimits:
        return cls(
            settings.max_audio_bytes,
            settings.min_audio_rate,
            settings.max_audio_rate,
            settings.max_audio_seconds,
            settings.max_audio_channels,
            settings.max_request_samples,
            cost,
        )

    def spend(self, samples: int, field: str) -> None:
        """Count ``field``'s recordings (``samples``, to be decoded) against the request's."""
        self.decoded = spend_request(
            self.decoded,
            samples,
            self.max_request_samples,
            self.cost,
            field=field,
            rows="recordings",
            verb="count",
            unit="samples",
        )


@dataclass(frozen=True)
class Clip:
    """One recording's bytes and what its header says, not yet decoded."""

    data: bytes
    frames: int
    rate: int
    channels: int

    @property
    def samples(self) -> int:
        return self.frames * self.channels


def open_clip(text: str, where: str, spec: AudioPreprocessing, limits: AudioLimits) -> Clip:
    """One base64 recording, its header read and checked against ``limits`` and the model's
    ``spec``, not yet decoded."""
    data = file_bytes(text, where, limits.max_bytes)
    try:
        info = soundfile.info(io.BytesIO(data))
    except UNDECODABLE:
        raise InvalidInput(f"{where} is not a decodable WAV or FLAC recording") from None
    if info.format not in FORMATS:
        raise InvalidInput(f"{where} is {info.format} audio; send WAV or FLAC")
    frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
    if not limits.min_rate <= rate <= limits.max_rate:
        raise InvalidInput(
            f"{where} is recorded at {rate} Hz; recordings may be from {limits.min_rate} to "
            f"{limits.max_rate} Hz"
        )
    if filter_size(rate, spec) > MAX_FILTER:
        gcd = math.gcd(rate, spec.sample_rate)
        raise InvalidInput(
            f"{where} is recorded at {rate} Hz, which is in no simple ratio to this model's "
            f"{spec.sample_rate} Hz ({rate // gcd}:{spec.sample_rate // gcd}): send it at "
            f"{spec.sample_rate} Hz or a common rate (8000, 11025, 22050, 44100, 48000 Hz)"
        )
    if channels > limits.max_channels:
        raise InvalidInput(f"{where} has {channels} channels; the limit is {limits.max_channels}")
    if frames == UNKNOWN_LENGTH:
        raise InvalidInput(
            f"{where} does not say how long it is (a stream written without its length): "
            "send it as a complete file"
        )
    check_duration(frames, rate, where, spec, limits)
    return Clip(data, frames, rate, channels)


def check_duration(
    frames: int, rate: int, where: str, spec: AudioPreprocessing, limits: AudioLimits
) -> None:
    """422 for a recording longer than MAX_AUDIO_SECONDS, or shorter than the model's
    ``min_duration`` (as training refuses it: an empty or cut-off recording, not a word)."""
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise InvalidInput(
            f"{where} is {seconds:.4g} s long; the limit is {limits.max_seconds:g} s"
        )
    if frames == 0:
        raise InvalidInput(f"{where} holds no samples")
    if frames < spec.min_duration * rate:
        raise InvalidInput(
            f"{where} is {seconds:.4g} s long, too short: this model takes recordings of at "
            f"least {spec.min_duration:g} s"
        )


def decoded(clip: Clip, where: str, spec: AudioPreprocessing, limits: AudioLimits) -> np.ndarray:
    """The recording's samples, ``[frames, channels]`` float32: no more frames than its
    header said."""
    try:
        samples, _ = soundfile.read(
            io.BytesIO(clip.data), frames=clip.frames, dtype="float32", always_2d=True
        )
    except UNDECODABLE:
        raise InvalidInput(f"{where} is not a decodable WAV or FLAC recording") from None
    if len(samples) < clip.frames:  # a file cut short: what it holds must still do
        check_duration(len(samples), clip.rate, where, spec, limits)
    out: np.ndarray = samples
    return out


def recording_to_array(
    clip: Clip, where: str, spec: AudioPreprocessing, limits: AudioLimits
) -> np.ndarray:
    """One recording -> its ``[1, n_mels, frames]`` float32 spectrogram, as in training."""
    row: np.ndarray = clips_to_array([(decoded(clip, where, spec, limits), clip.rate)], spec)[0]
    if not np.isfinite(row).all():
        raise InvalidInput(
            f"{where} holds samples that are NaN, infinite or too large for a spectrogram "
            "(a float WAV's samples belong in [-1, 1])"
        )
    return row


def recordings_to_array(
    values: list[object], field: str, spec: AudioPreprocessing, limits: AudioLimits
) -> np.ndarray:
    """A list of base64 recordings -> a float32 ``[n, 1, n_mels, frames]`` array, preprocessed
    as in training; every recording's header is checked, and their samples counted (with the
    entries of each rate's resampling filter), before any is decoded. They are then decoded
    one at a time, so that no more than one is held as samples, grouped by rate, so that each
    rate's filter is made at most once (meta_core keeps the last 32 made)."""
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{field} mixes recordings (strings) with other values")
    clips = [
        open_clip(v, f"{field}[{i}]", spec, limits)
        for i, v in enumerate(values)
        if isinstance(v, str)
    ]
    filters = sum(filter_size(rate, spec) for rate in {clip.rate for clip in clips})
    limits.spend(sum(clip.samples for clip in clips) + filters, field)
    rows: dict[int, np.ndarray] = {}
    for i in sorted(range(len(clips)), key=lambda i: clips[i].rate):
        rows[i] = recording_to_array(clips[i], f"{field}[{i}]", spec, limits)
    return np.stack([rows[i] for i in range(len(clips))])
