"""Omniglot for the tests: the real zips where ``OMNIGLOT_DIR`` names them (else the tests that
need them skip, or fail under ``REQUIRE_OMNIGLOT=1``), and a small archive of the same shape
that tests generate for everything that needs only the format."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from meta_core.data.omniglot import SETS

MISSING = (
    "needs the Omniglot zips: set OMNIGLOT_DIR to the folder holding images_background.zip "
    "and images_evaluation.zip (github.com/brendenlake/omniglot, python/)"
)


def real_omniglot() -> Path:
    """The folder of the real Omniglot zips; skips the calling test without them (fails it
    where ``REQUIRE_OMNIGLOT=1``, as CI sets)."""
    folder = os.environ.get("OMNIGLOT_DIR", "")
    root = Path(folder)
    if folder and all((root / f"{s}.zip").is_file() or (root / s).is_dir() for s in SETS):
        return root
    if os.environ.get("REQUIRE_OMNIGLOT") == "1":
        pytest.fail(f"REQUIRE_OMNIGLOT=1, but OMNIGLOT_DIR={folder!r} lacks them: {MISSING}")
    pytest.skip(MISSING)


def drawing(rng: np.random.Generator, size: int = 105) -> bytes:
    """A PNG as Omniglot's: a 1-bit image, black strokes on white."""
    image = Image.new("1", (size, size), 1)
    pen = ImageDraw.Draw(image)
    points = [tuple(p) for p in rng.integers(10, size - 10, (4, 2)).tolist()]
    pen.line(points, fill=0, width=6)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_omniglot(
    root: Path, alphabets: int = 2, characters: int = 3, drawings: int = 20, seed: int = 0
) -> list[str]:
    """Both zips, laid out as the official ones (``<set>/<alphabet>/<character>/<n>.png``),
    under ``root``; the character ids (``<set>/<alphabet>/<character>``), sorted."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for s in SETS:
        with zipfile.ZipFile(root / f"{s}.zip", "w") as zf:
            for a in range(alphabets):
                for c in range(characters):
                    char = f"{s}/Alphabet_{a}/character{c + 1:02d}"
                    ids.append(char)
                    for d in range(drawings):
                        zf.writestr(f"{char}/{c:04d}_{d + 1:02d}.png", drawing(rng))
    return sorted(ids)
