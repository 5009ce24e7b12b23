"""Audio preprocessing, written once for training and serving (the spec is the artifact's
:class:`~meta_core.preprocessing.AudioPreprocessing`): decode a WAV or FLAC file, mix to mono,
resample with a windowed-sinc filter, bring to a fixed duration, and compute the log-mel
spectrogram in torch. The resampler follows the classic bandlimited interpolation (Smith's,
as torchaudio's ``sinc_interp_hann``) and the spectrogram torchaudio's ``MelSpectrogram`` with
HTK mel bands; both are checked in the tests against independent implementations (SciPy's
polyphase resampler, the transformers library's NumPy spectrogram)."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from torch import Tensor

from meta_core.preprocessing import AudioPreprocessing

# libsndfile's names for the containers read here (WAVEX: WAV with the extensible header,
# as ffmpeg writes multichannel and 24-bit files).
FORMATS = ("WAV", "WAVEX", "FLAC")
# libsndfile's frame count for a stream that does not say its length (SF_COUNT_MAX).
UNKNOWN_LENGTH = 2**63 - 1
# The most entries a resampling filter bank may have (:func:`filter_size`): every common rate
# needs far fewer (11,025 Hz to 16 kHz: 291,200; 44.1 kHz: 76,000), a rate in no simple ratio
# to the target (44,101 Hz: 706 million) far more.
MAX_FILTER = 2**19


class AudioError(ValueError):
    """A file that is not a readable WAV or FLAC recording."""


def read_audio(source: Path | bytes) -> tuple[np.ndarray, int]:
    """A WAV or FLAC file (a path, or its bytes) -> ``([frames, channels] float32, rate)``,
    samples in [-1, 1]. Any other container (MP3, OGG...) is refused, even where libsndfile
    could read it: the service and training accept the same two."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        info = soundfile.info(handle)
        if info.format not in FORMATS:
            raise AudioError(f"is a {info.format} file; WAV or FLAC is needed")
        if info.frames >= UNKNOWN_LENGTH:
            raise AudioError("does not say how long it is (a stream written without its length)")
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (RuntimeError, TypeError, ValueError, MemoryError) as exc:  # LibsndfileError too
        raise AudioError(f"is not a readable WAV or FLAC file ({exc})") from None
    if len(samples) == 0:
        raise AudioError("holds no samples")
    return samples, int(rate)


def mono(samples: np.ndarray) -> Tensor:
    """``[frames, channels]`` -> ``[frames]`` float32, the channels' mean."""
    out = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return out.mean(dim=1) if out.ndim == 2 else out


def filter_size(rate: int, spec: AudioPreprocessing) -> int:
    """The entries of the filter bank :func:`sinc_kernel` makes to resample ``rate`` to the
    spec's rate (0: none needed)."""
    if rate == spec.sample_rate:
        return 0
    gcd = math.gcd(rate, spec.sample_rate)
    orig, new = rate // gcd, spec.sample_rate // gcd
    width = math.ceil(spec.resampler_zeros * orig / (min(orig, new) * spec.resampler_rolloff))
    return new * (2 * width + orig)


def check_rate(rate: int, spec: AudioPreprocessing) -> None:
    """AudioError for a rate whose resampling filter would exceed :data:`MAX_FILTER`."""
    if filter_size(rate, spec) > MAX_FILTER:
        gcd = math.gcd(rate, spec.sample_rate)
        raise AudioError(
            f"is recorded at {rate} Hz, which is in no simple ratio to {spec.sample_rate} Hz "
            f"({rate // gcd}:{spec.sample_rate // gcd}): resample it to {spec.sample_rate} Hz "
            "or a common rate (8000, 11025, 22050, 44100, 48000 Hz)"
        )


@lru_cache(maxsize=32)
def sinc_kernel(orig: int, new: int, zeros: int, rolloff: float) -> tuple[Tensor, int]:
    """The polyphase filter bank resampling ``orig`` to ``new`` samples (both divided by their
    gcd): ``[new, 1, taps]``, one row per output phase, a sinc with its cutoff at ``rolloff``
    of the lower Nyquist frequency, Hann-windowed over ``zeros`` zero crossings each side; and
    the padding each side needs."""
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / cutoff)
    index = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + index
    t = (t * cutoff).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig)).float(), width


def resample(wave: Tensor, rate: int, spec: AudioPreprocessing) -> Tensor:
    """``[..., frames]`` at ``rate`` -> ``[..., ceil(frames * new / rate)]`` at the spec's."""
    if rate == spec.sample_rate:
        return wave
    check_rate(rate, spec)
    gcd = math.gcd(rate, spec.sample_rate)
    orig, new = rate // gcd, spec.sample_rate // gcd
    kernel, width = sinc_kernel(orig, new, spec.resampler_zeros, spec.resampler_rolloff)
    shape, length = wave.shape[:-1], wave.shape[-1]
    flat = F.pad(wave.reshape(-1, 1, length), (width, width + orig))
    out = F.conv1d(flat, kernel, stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
    return out[:, : math.ceil(new * length / orig)].reshape(*shape, -1)


def fit(wave: Tensor, spec: AudioPreprocessing) -> Tensor:
    """``[frames]`` -> exactly ``spec.samples``, trimmed or padded with zeros as ``spec.fit``
    says."""
    n, length = spec.samples, wave.shape[-1]
    if length < n:
        before = 0 if spec.fit == "start" else (n - length) // 2
        return F.pad(wave, (before, n - length - before))
    if spec.fit == "start":
        start = 0
    elif spec.fit == "center":
        start = (length - n) // 2
    else:  # the window of most energy: a cumulative sum of squares, one pass
        energy = torch.cat([torch.zeros(1, dtype=torch.float64), (wave.double() ** 2).cumsum(0)])
        start = int((energy[n:] - energy[:-n]).argmax())
    return wave[start : start + n]


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filters(spec: AudioPreprocessing) -> Tensor:
    """``[n_fft // 2 + 1, n_mels]``: triangular filters, equally spaced on the HTK mel scale,
    each rising from its lower neighbour's centre to its own and falling to the next's (peak
    1, no area normalization)."""
    bins = torch.linspace(0, spec.sample_rate / 2, spec.n_fft // 2 + 1, dtype=torch.float64)
    low, high = hz_to_mel(torch.tensor(spec.f_min)), hz_to_mel(torch.tensor(spec.top))
    edges = mel_to_hz(torch.linspace(float(low), float(high), spec.n_mels + 2, dtype=torch.float64))
    gaps = edges.diff()
    slopes = edges[None, :] - bins[:, None]  # [bins, n_mels + 2]
    down = -slopes[:, :-2] / gaps[:-1]
    up = slopes[:, 2:] / gaps[1:]
    return torch.clamp(torch.minimum(down, up), min=0).float()


def log_mel(waves: Tensor, spec: AudioPreprocessing) -> Tensor:
    """``[n, samples]`` -> ``[n, n_mels, frames]`` float32 log-mel spectrograms (not yet
    standardized)."""
    window = torch.hann_window(spec.n_fft, dtype=waves.dtype, device=waves.device)
    stft = torch.stft(
        waves,
        spec.n_fft,
        hop_length=spec.hop,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = stft.real**2 + stft.imag**2  # [n, bins, frames]
    mel = torch.einsum("nbf,bm->nmf", power, mel_filters(spec).to(waves.device))
    return torch.log(torch.clamp(mel, min=spec.floor))


def standardize(features: Tensor, spec: AudioPreprocessing) -> Tensor:
    """Log-mel features with the train split's mean and std applied (if the spec has them)."""
    if spec.mean is None or spec.std is None:
        return features
    return (features - spec.mean) / spec.std


def waveform(samples: np.ndarray, rate: int, spec: AudioPreprocessing) -> Tensor:
    """One decoded clip (``[frames, channels]`` or ``[frames]``) -> ``[spec.samples]``: mono,
    resampled, fitted to the spec's duration."""
    return fit(resample(mono(samples), rate, spec), spec)


def clips_to_features(clips: list[tuple[np.ndarray, int]], spec: AudioPreprocessing) -> Tensor:
    """Decoded clips ``(samples, rate)`` -> ``[n, 1, n_mels, frames]`` log-mel spectrograms,
    not yet standardized (training caches these and standardizes with the train split's
    statistics)."""
    with torch.inference_mode():
        waves = torch.stack([waveform(samples, rate, spec) for samples, rate in clips])
        return log_mel(waves, spec).unsqueeze(1).clone()


def clips_to_array(clips: list[tuple[np.ndarray, int]], spec: AudioPreprocessing) -> np.ndarray:
    """Decoded clips -> ``[n, 1, n_mels, frames]`` float32, the network's input, exactly as
    in training."""
    features: np.ndarray = standardize(clips_to_features(clips, spec), spec).numpy()
    return features


__all__ = [
    "FORMATS",
    "MAX_FILTER",
    "AudioError",
    "check_rate",
    "filter_size",
    "clips_to_array",
    "clips_to_features",
    "fit",
    "log_mel",
    "mel_filters",
    "read_audio",
    "resample",
    "standardize",
    "waveform",
]
