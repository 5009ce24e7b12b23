"""Audio preprocessing against independent implementations: the resampler against the exact
signal and SciPy's polyphase resampler, the mel filters and log-mel spectrogram against the
transformers library's NumPy ones; duration fitting; and the files it refuses."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample_poly
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from meta_core.audio import (
    AudioError,
    clips_to_array,
    filter_size,
    fit,
    log_mel,
    mel_filters,
    read_audio,
    resample,
    sinc_kernel,
    waveform,
)
from meta_core.preprocessing import AudioPreprocessing
from tests.utils.recordings import encode, tone

SPEC = AudioPreprocessing()


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_a_resampled_tone_is_the_tone_at_the_new_rate(rate):
    x = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    y = resample(torch.from_numpy(x), rate, SPEC).numpy()
    assert len(y) == 16000
    exact = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y - exact)[200:-200].max() < 1e-3  # away from the edges' zero padding
    up, down = 16000 // np.gcd(rate, 16000), rate // np.gcd(rate, 16000)
    assert np.abs(y - resample_poly(x, up, down))[200:-200].max() < 2e-3


def test_resampling_removes_what_the_new_rate_cannot_hold():
    rate = 44100
    t = np.arange(rate) / rate
    x = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 12000 * t)).astype(np.float32)
    y = resample(torch.from_numpy(x), rate, SPEC).numpy()[400:-400]
    # 12 kHz is above the new Nyquist (8 kHz): filtered out, not folded down to 4 kHz.
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    at = lambda f: spectrum[np.abs(freqs - f).argmin()]  # noqa: E731
    assert at(4000) < 1e-2 * at(1000)  # 12 kHz folded down would be as strong as 1 kHz


def test_mel_filters_match_an_independent_implementation():
    ref = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=40,
        min_frequency=20,
        max_frequency=8000,
        sampling_rate=16000,
        norm=None,
        mel_scale="htk",
    )
    assert mel_filters(SPEC).numpy() == pytest.approx(ref, abs=1e-5)


def test_log_mel_matches_an_independent_implementation():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ref = spectrogram(
        wave.astype(np.float64),
        window_function(400, "hann"),
        frame_length=400,
        hop_length=160,
        power=2.0,
        center=True,
        pad_mode="reflect",
        mel_filters=mel_filters(SPEC).double().numpy(),
        mel_floor=SPEC.floor,
        log_mel="log",
    )
    ours = log_mel(torch.from_numpy(wave)[None], SPEC)[0].numpy()
    assert ours.shape == ref.shape == (40, 101) == SPEC.input_shape[1:]
    assert ours == pytest.approx(ref, abs=1e-4)


def test_fit_trims_or_pads_as_the_spec_says():
    n = SPEC.samples
    short = torch.ones(n // 2)
    assert torch.equal(fit(short, SPEC.model_copy(update={"fit": "start"}))[: n // 2], short)
    centred = fit(short, SPEC.model_copy(update={"fit": "center"}))
    assert centred[: n // 4].abs().sum() == 0 and centred[n // 4 : 3 * n // 4].min() == 1
    # A word in the middle of three seconds: "loudest" finds it, "start" keeps silence.
    long = torch.zeros(3 * n)
    long[int(1.2 * n) : int(1.7 * n)] = 1.0
    assert fit(long, SPEC).sum() == pytest.approx(0.5 * n)
    assert fit(long, SPEC.model_copy(update={"fit": "start"})).sum() == 0
    assert len(fit(long, SPEC.model_copy(update={"fit": "center"}))) == n


def sine(freq: float, rate: int, channels: int = 1) -> tuple[np.ndarray, int]:
    x = 0.3 * np.sin(2 * np.pi * freq * np.arange(round(0.8 * rate)) / rate)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32), rate


def test_a_clip_at_another_rate_or_in_stereo_gives_nearly_the_same_features():
    a, b, c = clips_to_array([sine(440, 16000), sine(440, 44100, 2), sine(440, 8000)], SPEC)
    loud = a > a.mean()  # the tone's bands (elsewhere only leakage, near the floor)
    assert np.abs(a - b)[loud].mean() < 0.1 and np.abs(a - c)[loud].mean() < 0.2
    other = clips_to_array([sine(880, 16000)], SPEC)[0]
    assert np.abs(a - other)[loud].mean() > 5


def test_wav_and_flac_read_alike_and_others_are_refused():
    rng = np.random.default_rng(2)
    x = tone(300, 0.5, 22050, rng=rng, channels=2)
    wav, rate = read_audio(encode(x, 22050, "WAV"))
    flac, _ = read_audio(encode(x, 22050, "FLAC"))
    assert rate == 22050 and wav.shape == (len(x), 2)
    assert np.abs(wav - flac).max() < 1e-4  # both 16-bit PCM
    assert waveform(wav, rate, SPEC).shape == (SPEC.samples,)
    with pytest.raises(AudioError, match="is a OGG file; WAV or FLAC is needed"):
        read_audio(encode(x, 22050, "OGG"))
    with pytest.raises(AudioError, match="is not a readable WAV or FLAC file"):
        read_audio(b"RIFF, but not really")
    with pytest.raises(AudioError, match="holds no samples"):
        read_audio(encode(np.zeros((0, 1), np.float32), 16000, "WAV"))


def test_the_spec_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="above the Nyquist frequency"):
        AudioPreprocessing(sample_rate=8000, f_max=6000)
    with pytest.raises(ValueError, match="f_min must be below f_max"):
        AudioPreprocessing(f_min=5000, f_max=4000)
    with pytest.raises(ValueError, match="mean and std go together"):
        AudioPreprocessing(mean=0.0)
    assert AudioPreprocessing(duration=0.5, hop=320).input_shape == (1, 40, 26)
    assert soundfile.__libsndfile_version__  # decoding needs nothing outside the wheel


def test_streams_without_a_length_and_rates_in_no_simple_ratio_are_refused():
    rng = np.random.default_rng(3)
    flac = bytearray(encode(tone(300, 0.5, 16000, rng=rng), 16000, "FLAC"))
    flac[21] &= 0xF0  # STREAMINFO's total samples: 0, unknown (as a streaming encoder leaves it)
    flac[22:26] = bytes(4)
    with pytest.raises(AudioError, match="does not say how long it is"):
        read_audio(bytes(flac))
    assert filter_size(44100, SPEC) == 76000 and filter_size(16000, SPEC) == 0
    kernel, _ = sinc_kernel(441, 160, SPEC.resampler_zeros, SPEC.resampler_rolloff)
    assert kernel.numel() == filter_size(44100, SPEC)
    with pytest.raises(AudioError, match=r"44101 Hz, which is in no simple ratio to 16000 Hz"):
        resample(torch.zeros(44101), 44101, SPEC)


def test_wav_with_the_extensible_header_is_wav():
    rng = np.random.default_rng(4)
    x = tone(300, 0.5, 48000, rng=rng, channels=3)
    data = encode(x, 48000, "WAVEX")
    assert soundfile.info(io.BytesIO(data)).format == "WAVEX"
    samples, rate = read_audio(data)
    assert rate == 48000 and samples.shape == (len(x), 3)
