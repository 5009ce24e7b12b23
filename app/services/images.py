"""Images sent as base64 PNG or JPEG (plain or as a data URL), decoded within bounds and
preprocessed exactly as in training (the artifact's ``preprocessing``).

Decoding is the costly part and an image's bytes say little about it (a 57 KB body can hold
hundreds of megapixels of 1-bit PNG), so every bound is checked on the headers, before any
pixel is decoded: each image's pixels, each side against the model's input (a large JPEG
first decodes at the reduced scale that fits, if one does), and the pixels of all of one
request's images together, which also count against the caller's cost budget."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.services.limits import spend_request
from app.services.uploads import file_bytes
from meta_core.preprocessing import ImagePreprocessing, image_to_array

# MPO: a phone's JPEG with further frames (another view, a depth map) after the first, which
# is the picture, and which decodes as any JPEG does.
FORMATS = ("PNG", "JPEG", "MPO")
DCT_SCALED = ("JPEG", "MPO")  # decodable at 1/2, 1/4 or 1/8 of their size for less work
UNDECODABLE = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombWarning,
    Image.DecompressionBombError,
)


@dataclass
class ImageLimits:
    """The bounds on one request's images, and the pixels its images decode so far: make one
    per request (:meth:`of`). ``cost``, if given, refuses (422) a request whose decoded
    pixels, all of its images' so far, would put it over its cost budget."""

    max_bytes: int  # one encoded image
    max_pixels: int  # one image, as its header says
    max_scale: int = 32  # each side, at most this many times the model's input side
    max_request_pixels: int = 2**26  # all of the request's images, as decoded
    cost: Callable[[int], None] | None = None
    decoded: int = 0

    @classmethod
    def of(cls, settings: Settings, cost: Callable[[int], None] | None = None) -> ImageLimits:
        return cls(
            settings.max_image_bytes,
            settings.max_image_pixels,
            settings.max_image_scale,
            settings.max_request_pixels,
            cost,
        )

    def spend(self, pixels: int, field: str) -> None:
        """Count ``field``'s images (``pixels``, to be decoded) against the request's."""
        self.decoded = spend_request(
            self.decoded,
            pixels,
            self.max_request_pixels,
            self.cost,
            field=field,
            rows="images",
            verb="decode to",
            unit="pixels",
        )


def open_image(text: str, where: str, spec: ImagePreprocessing, limits: ImageLimits) -> Image.Image:
    """One base64 image, its header read and checked against ``limits``, not yet decoded."""
    data = file_bytes(text, where, limits.max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UNDECODABLE:
        raise InvalidInput(f"{where} is not a decodable PNG or JPEG image") from None
    if image.format not in FORMATS:
        raise InvalidInput(f"{where} is a {image.format} image; send PNG or JPEG")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidInput(
            f"{where} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels"
        )
    side = limits.max_scale * max(spec.size)
    reduce_to(image, side)
    if max(image.size) > side:
        raise InvalidInput(
            f"{where} is {width}x{height} pixels; images for this model may be at most "
            f"{side} pixels a side ({limits.max_scale} times its {spec.size[1]}x"
            f"{spec.size[0]} input): downscale it"
        )
    return image


def reduce_to(image: Image.Image, side: int) -> None:
    """Let a JPEG with a side over ``side`` pixels decode at the largest of 1/2, 1/4 and 1/8
    of its size that brings it within, if one does (``Image.draft``: scaled in the DCT, for a
    fraction of the work). Other images, and JPEGs within ``side``, decode as they are."""
    width, height = image.size
    if image.format not in DCT_SCALED or max(width, height) <= side:
        return
    scale = next((s for s in (2, 4) if -(-max(width, height) // s) <= side), 8)
    # draft keeps each side at least the size asked for: asking for size // scale gets scale.
    image.draft(image.mode, (max(1, width // scale), max(1, height // scale)))


def decoded(image: Image.Image, where: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except UNDECODABLE:
        raise InvalidInput(f"{where} is not a decodable PNG or JPEG image") from None
    return image


def images_to_array(
    values: list[object], field: str, spec: ImagePreprocessing, limits: ImageLimits
) -> np.ndarray:
    """A list of base64 images -> a float32 ``[n, C, H, W]`` array, preprocessed as in
    training; every image's header is checked, and their pixels counted, before any is
    decoded."""
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{field} mixes images (strings) with other values")
    opened = [
        open_image(v, f"{field}[{i}]", spec, limits)
        for i, v in enumerate(values)
        if isinstance(v, str)
    ]
    limits.spend(sum(image.width * image.height for image in opened), field)
    arrays = [
        image_to_array(decoded(image, f"{field}[{i}]"), spec) for i, image in enumerate(opened)
    ]
    return np.stack(arrays)
