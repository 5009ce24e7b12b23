"""Image preprocessing, written once: the data loaders and the service apply the spec stored in
an artifact's manifest (``preprocessing``), so serving sees exactly what training saw."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class ImagePreprocessing(BaseModel):
    """How an image becomes a network input: grayscale, resize, polarity, scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["image"] = "image"
    grayscale: Literal[True] = True
    size: tuple[int, int] = Field(description="(height, width) after resizing")
    resample: Literal["lanczos", "bilinear", "nearest"] = "lanczos"
    invert: bool = False
    scale: float = Field(gt=0)
    layout: Literal["NCHW"] = "NCHW"


def image_to_uint8(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """Grayscale, resize, polarity: one image -> ``[H, W]`` uint8 (multiply by ``scale``)."""
    height, width = spec.size
    small = image.convert("L").resize((width, height), RESAMPLING[spec.resample])
    pixels = np.asarray(small, dtype=np.uint8)
    return 255 - pixels if spec.invert else pixels


def image_to_array(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """One image -> ``[1, H, W]`` float32, scaled as in training."""
    return (image_to_uint8(image, spec).astype(np.float32) * spec.scale)[None]
