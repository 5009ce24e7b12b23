"""Preprocessing, written once: the data loaders and the service apply the spec stored in an
artifact's manifest (``preprocessing``), so serving sees exactly what training saw. Images:
orientation, bit depth, transparency, color mode, size, polarity, scale, normalization.
Tables: the feature columns' order and standardization, and a regression target's. Text: the
pretrained encoder (named and hashed) whose sentence embeddings are the network's input.
Audio: mono, resampling, duration and the log-mel spectrogram (:mod:`meta_core.audio`)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, model_validator

from meta_core.encoders import EncoderSpec

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class ImagePreprocessing(BaseModel):
    """How an image becomes a network input: grayscale or RGB, resize, polarity, scale, and
    optionally a per-channel normalization ``(x * scale - mean) / std``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["image"] = "image"
    grayscale: bool = True  # False: RGB, three channels
    size: tuple[int, int] = Field(description="(height, width) after resizing")
    resample: Literal["lanczos", "bilinear", "nearest"] = "lanczos"
    invert: bool = False
    scale: float = Field(gt=0)
    mean: tuple[float, ...] | None = Field(None, description="per channel, after scaling")
    std: tuple[float, ...] | None = Field(None, description="per channel, after scaling")
    layout: Literal["NCHW"] = "NCHW"

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> ImagePreprocessing:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} needs {self.channels} values, one per channel")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError("std must be positive")
        return self

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I": how older Pillow read them
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: its EXIF orientation applied (a phone's photo is
    stored sideways with a tag saying so; a turned character is another class)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
        turned = ImageOps.exif_transpose(image)
        assert turned is not None  # not in place
        return turned
    return image


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (a PNG's "I;16") scaled to 8 bits, 65535 to 255 (``convert("L")``
    would clip everything above 255, so mid-grey came out white); a transparent grey value
    (PNG's tRNS) becomes an alpha channel. Other modes are returned as they are."""
    if image.mode not in SIXTEEN_BIT:
        return image
    values = np.asarray(image).astype(np.int64)
    gray = Image.fromarray(((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8))
    key = image.info.get("transparency")
    if isinstance(key, int):
        gray.putalpha(Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8)))
    return gray


def opaque(image: Image.Image, background: int) -> Image.Image:
    """An image with transparency (an alpha channel, or a transparent colour) composited onto
    a ``background`` grey level; others as they are. Converting alone would drop the alpha
    and keep the colour beneath it, usually black: a drawing on a transparent background
    came out as one dark square."""
    if image.mode not in ALPHA and "transparency" not in image.info:
        return image
    base = Image.new("RGBA", image.size, (background, background, background, 255))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def image_to_uint8(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """Orientation, bit depth, transparency, color mode, resize, polarity: one image ->
    ``[H, W]`` (grayscale) or ``[3, H, W]`` (RGB) uint8 (then :func:`normalize` it).
    Transparent parts take the colour that becomes 0: white when ``invert`` (black strokes
    on white, as Omniglot is drawn), else black."""
    height, width = spec.size
    mode = "L" if spec.grayscale else "RGB"
    image = opaque(eight_bit(upright(image)), 255 if spec.invert else 0)
    small = image.convert(mode).resize((width, height), RESAMPLING[spec.resample])
    pixels = np.asarray(small, dtype=np.uint8)
    if not spec.grayscale:
        pixels = pixels.transpose(2, 0, 1)
    return 255 - pixels if spec.invert else pixels


def normalize(pixels: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """uint8 pixels ``[..., C, H, W]`` (or ``[H, W]``) -> float32, scaled and normalized."""
    out = pixels.astype(np.float32) * np.float32(spec.scale)
    if spec.mean is not None and spec.std is not None:
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
        out = (out - mean) / std
    return out


def image_to_array(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """One image -> ``[C, H, W]`` float32, preprocessed as in training."""
    pixels = image_to_uint8(image, spec)
    return normalize(pixels if pixels.ndim == 3 else pixels[None], spec)


class TablePreprocessing(BaseModel):
    """How a table's row becomes a network input: its feature columns, in order, each
    standardized with the train split's mean and standard deviation; a regression target is
    standardized too, and predictions are mapped back to its units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["table"] = "table"
    columns: tuple[str, ...] = Field(min_length=1)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target: str
    target_mean: float | None = None  # regression only
    target_std: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_value_per_column(self) -> TablePreprocessing:
        if not len(self.mean) == len(self.std) == len(self.columns):
            raise ValueError("mean and std need one value per column")
        if not all(v > 0 for v in self.std):
            raise ValueError("std must be positive")
        return self

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """Raw feature rows ``[n, F]`` (in ``columns`` order) -> standardized float32."""
        mean = np.asarray(self.mean, dtype=np.float32)
        return ((rows.astype(np.float32) - mean) / np.asarray(self.std, dtype=np.float32)).astype(
            np.float32
        )

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Regression targets in the user's units -> standardized float32."""
        if self.target_mean is None or self.target_std is None:
            return y.astype(np.float32)
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def outputs(self, out: np.ndarray) -> np.ndarray:
        """The network's regression outputs -> the user's units."""
        if self.target_mean is None or self.target_std is None:
            return out
        return (out * np.float32(self.target_std) + np.float32(self.target_mean)).astype(np.float32)


class TextPreprocessing(BaseModel):
    """How a sentence becomes a network input: the pretrained encoder's embedding (tokenized,
    truncated to its ``max_tokens``, mean-pooled, L2-normalised), computed once per example;
    the network on top is what meta-training and the inner loop change. The encoder's weights
    are not in the artifact: the manifest names them and their sha256, checked on load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text"] = "text"
    encoder: EncoderSpec


class AudioPreprocessing(BaseModel):
    """How a recording becomes a network input (:mod:`meta_core.audio` computes it): decoded,
    mixed to mono, resampled to ``sample_rate`` (windowed-sinc), brought to ``duration``
    seconds (trimmed or padded with silence, as ``fit`` says), then a log-mel spectrogram:
    a Hann-windowed STFT of ``n_fft`` samples every ``hop`` samples (centred, reflect-padded),
    its power on ``n_mels`` triangular HTK mel bands from ``f_min`` to ``f_max``, and
    ``ln(max(mel, floor))``; with ``mean`` and ``std`` (the train split's), standardized.
    The input is the spectrogram as a one-channel image, ``[1, n_mels, frames]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["audio"] = "audio"
    sample_rate: int = Field(16000, ge=1000, le=192000)
    duration: float = Field(1.0, gt=0, le=60)
    # A longer clip keeps its first samples ("start"), its middle ("center") or its loudest
    # window ("loudest", where a spoken word is); a shorter one is padded with silence after
    # ("start") or evenly on both sides ("center", "loudest").
    fit: Literal["start", "center", "loudest"] = "loudest"
    # A clip shorter than this (as recorded, before fitting) is refused, in training and by
    # the service: an empty or cut-off recording, not a word.
    min_duration: float = Field(0.1, ge=0)
    resampler: Literal["sinc-hann"] = "sinc-hann"
    resampler_zeros: int = Field(6, ge=1, le=64)  # the sinc's zero crossings each side
    resampler_rolloff: float = Field(0.99, gt=0, le=1)  # its cutoff, of the lower Nyquist
    n_fft: int = Field(400, ge=16)  # also the window's length: 25 ms at 16 kHz
    hop: int = Field(160, ge=1)  # 10 ms at 16 kHz
    n_mels: int = Field(40, ge=16)
    f_min: float = Field(20.0, ge=0)
    f_max: float | None = Field(None, gt=0)  # None: the Nyquist frequency
    floor: float = Field(1e-6, gt=0)
    mean: float | None = None
    std: float | None = Field(None, gt=0)
    layout: Literal["NCHW"] = "NCHW"

    @model_validator(mode="after")
    def _consistent(self) -> AudioPreprocessing:
        if self.top > self.sample_rate / 2:
            raise ValueError(f"f_max {self.f_max} is above the Nyquist frequency")
        if self.f_min >= self.top:
            raise ValueError("f_min must be below f_max")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.samples <= self.n_fft // 2:
            raise ValueError(f"duration {self.duration} s is shorter than half a window")
        return self

    @property
    def top(self) -> float:
        """The highest mel band's upper edge, in Hz."""
        return self.f_max if self.f_max is not None else self.sample_rate / 2

    @property
    def samples(self) -> int:
        """Samples of one clip once brought to ``duration``."""
        return round(self.duration * self.sample_rate)

    @property
    def frames(self) -> int:
        """Spectrogram frames of one clip (centred STFT)."""
        return 1 + self.samples // self.hop

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.frames)


class RolloutPreprocessing(BaseModel):
    """How a policy's rollouts become its inner step's support rows
    (:func:`meta_core.rl.rollouts.support_set`): returns discounted by ``gamma``, a
    linear-feature baseline fitted by ridge regression (``baseline_reg``), advantages
    normalised over the batch. ``horizon`` is the longest trajectory training saw, and
    ``action_low``/``action_high`` the box the environment clips actions to (the policy's
    samples are not clipped: their log-probabilities are of the actions as sampled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["rollouts"] = "rollouts"
    gamma: float = Field(0.99, gt=0, le=1)
    baseline: Literal["linear-features"] = "linear-features"
    baseline_reg: float = Field(1e-5, gt=0)
    horizon: int = Field(100, ge=1)
    action_low: float = -0.1
    action_high: float = 0.1


Preprocessing = Annotated[
    ImagePreprocessing
    | TablePreprocessing
    | TextPreprocessing
    | AudioPreprocessing
    | RolloutPreprocessing,
    Field(discriminator="type"),
]
