"""Images sent as base64 PNG or JPEG (plain or as a data URL), decoded and preprocessed exactly
as in training (the artifact's ``preprocessing``)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.core.errors import InvalidInput
from meta_core.preprocessing import ImagePreprocessing, image_to_array

FORMATS = ("PNG", "JPEG")


def decode_image(text: str, where: str, *, max_bytes: int, max_pixels: int) -> Image.Image:
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidInput(f"{where} is a data URL without base64 data")
    if len(text) > max_bytes * 4 // 3 + 4:
        raise InvalidInput(f"{where} is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise InvalidInput(f"{where} is a {image.format} image; send PNG or JPEG")
            if image.width * image.height > max_pixels:
                raise InvalidInput(
                    f"{where} is {image.width}x{image.height} pixels; the limit "
                    f"is {max_pixels} pixels"
                )
            image.load()
    except InvalidInput:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        raise InvalidInput(f"{where} is not a decodable PNG or JPEG image") from None
    return image


def images_to_array(
    values: list[Any], field: str, spec: ImagePreprocessing, *, max_bytes: int, max_pixels: int
) -> np.ndarray:
    """A list of base64 images -> a float32 ``[n, 1, H, W]`` array, preprocessed as in training."""
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{field} mixes images (strings) with other values")
    arrays = [
        image_to_array(
            decode_image(v, f"{field}[{i}]", max_bytes=max_bytes, max_pixels=max_pixels), spec
        )
        for i, v in enumerate(values)
    ]
    return np.stack(arrays)
