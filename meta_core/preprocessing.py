"""Image preprocessing, written once: the data loaders and the service apply the spec stored in
an artifact's manifest (``preprocessing``), so serving sees exactly what training saw."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def image_to_uint8(image: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """Grayscale, resize, polarity: one image -> ``[H, W]`` uint8 (multiply by ``scale``)."""
    if not spec.get("grayscale", True):
        raise ValueError("only grayscale image preprocessing is implemented")
    width, height = spec["size"][1], spec["size"][0]
    small = image.convert("L").resize((width, height), RESAMPLING[spec.get("resample", "lanczos")])
    pixels = np.asarray(small, dtype=np.uint8)
    return 255 - pixels if spec.get("invert", False) else pixels


def image_to_array(image: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """One image -> ``[1, H, W]`` float32, scaled as in training."""
    return (image_to_uint8(image, spec).astype(np.float32) * float(spec["scale"]))[None]
