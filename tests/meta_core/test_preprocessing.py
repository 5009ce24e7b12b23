"""Images as training and serving see them (one function, ``image_to_array``): 16-bit
grayscale scaled, transparency composited onto the background the data was drawn on, EXIF
orientation applied; each case against the array it must give."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from meta_core.data.omniglot import PREPROCESSING as OMNIGLOT
from meta_core.preprocessing import ImagePreprocessing, image_to_array

# No resize (28x28 images for a 28x28 input) and no inversion: the pixels, scaled to [0, 1].
PLAIN = ImagePreprocessing(size=(28, 28), scale=1 / 255)
RGB = ImagePreprocessing(grayscale=False, size=(28, 28), scale=1 / 255)


def reopened(image: Image.Image, fmt: str = "PNG", **options: object) -> Image.Image:
    """``image`` as a client's file: encoded, then opened as the service opens it."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return Image.open(io.BytesIO(buf.getvalue()))


def stroke() -> np.ndarray:
    """A 28x28 mask: a vertical bar and a short horizontal one at the top (no symmetry)."""
    mask = np.zeros((28, 28), dtype=bool)
    mask[4:24, 12:15] = True
    mask[4:7, 15:22] = True
    return mask


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (32768, 128), (65535, 255)])
def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(value: int, expected: int):
    image = reopened(Image.fromarray(np.full((28, 28), value, dtype=np.uint16)))
    assert image.mode == "I;16"
    out = image_to_array(image, PLAIN)
    np.testing.assert_allclose(out, np.full((1, 28, 28), expected / 255, dtype=np.float32))


def test_a_16_bit_ramp_keeps_its_order_and_range():
    ramp = (np.arange(28 * 28, dtype=np.uint32) * 65535 // (28 * 28 - 1)).astype(np.uint16)
    out = image_to_array(reopened(Image.fromarray(ramp.reshape(28, 28))), PLAIN)
    expected = np.round(ramp.astype(np.float64) / 257).reshape(1, 28, 28) / 255
    np.testing.assert_allclose(out, expected.astype(np.float32), atol=1e-6)


def test_an_opaque_stroke_on_a_transparent_background_is_a_stroke_on_white():
    # Omniglot-style data is black strokes on white, inverted: white is what maps to 0.
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # transparent black everywhere
    rgba[stroke()] = (0, 0, 0, 255)  # an opaque black stroke
    out = image_to_array(reopened(Image.fromarray(rgba)), OMNIGLOT)
    np.testing.assert_array_equal(out[0], stroke().astype(np.float32))


def test_gray_with_alpha_and_half_transparency_are_composited():
    la = np.zeros((28, 28, 2), dtype=np.uint8)
    la[..., 1] = 0  # transparent
    la[stroke()] = (0, 255)
    la[20:24, 0:4] = (0, 128)  # black at half opacity: half a stroke
    image = reopened(Image.fromarray(la, mode="LA"))
    assert image.mode == "LA"
    out = image_to_array(image, OMNIGLOT)
    expected = stroke().astype(np.float32)
    expected[20:24, 0:4] = (255 - round(255 * (1 - 128 / 255))) / 255
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_a_palette_image_with_a_transparent_colour_is_composited():
    index = stroke().astype(np.uint8)  # 0: the transparent colour, 1: black
    image = Image.fromarray(index, mode="P")
    image.putpalette([255, 0, 0, 0, 0, 0])  # a red background, but transparent
    out = image_to_array(reopened(image, transparency=0), OMNIGLOT)
    np.testing.assert_array_equal(out[0], stroke().astype(np.float32))


def test_without_inversion_transparency_becomes_black_the_colour_that_maps_to_0():
    rgba = np.full((28, 28, 4), (255, 255, 255, 0), dtype=np.uint8)  # transparent white
    rgba[stroke()] = (255, 0, 0, 255)  # an opaque red stroke
    out = image_to_array(reopened(Image.fromarray(rgba)), RGB)
    expected = np.zeros((3, 28, 28), dtype=np.float32)
    expected[0][stroke()] = 1.0
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(orientation: int, turns: int):
    # 6: the camera was turned; the picture is shown turned 90 degrees clockwise (8: counter-).
    pixels = np.where(stroke(), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = image_to_array(reopened(Image.fromarray(pixels), exif=exif), OMNIGLOT)
    expected = np.rot90(stroke(), k=turns).astype(np.float32)
    np.testing.assert_array_equal(out[0], expected)


def test_exif_orientation_of_a_jpeg_is_applied():
    pixels = np.where(stroke(), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = reopened(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    out = image_to_array(image, OMNIGLOT)[0]
    turned = np.rot90(stroke(), k=-1).astype(np.float32)
    assert np.abs(out - turned).max() < 0.25  # JPEG's own error, no more
    assert np.abs(out - stroke()).max() > 0.9  # and not the unturned drawing


def test_an_ordinary_drawing_is_unchanged():
    # Omniglot's own files (1-bit PNGs, no EXIF, no alpha) come out as they always did.
    pixels = np.where(stroke(), 0, 255).astype(np.uint8)
    image = reopened(Image.fromarray(pixels).convert("1"))
    assert image.mode == "1"
    np.testing.assert_array_equal(image_to_array(image, OMNIGLOT)[0], stroke())
