"""``meta-core data example --out DIR``: a small dataset of each kind the project trains on
without code, generated here (nothing is downloaded), for the walkthrough in docs/training.md
("Your own data, no code") and the tests.

- ``DIR/images/<shape>-<color>/NN.png``: 36 classes (6 shapes x 6 colours), ``per_class``
  RGB drawings each, jittered in size, position and rotation over a noisy background.
- ``DIR/table.csv``: sensor readings of 40 machines (``machine``, ``temperature``, ``load``,
  ``vibration``), and each reading's ``wear``, which every machine relates to the readings in
  its own way (its own coefficients): a family of regression tasks, one per machine.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "ring", "square", "triangle", "star", "cross")
COLORS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "orange": (240, 140, 20),
    "purple": (140, 50, 180),
    "black": (30, 30, 30),
}


def draw(shape: str, color: tuple[int, int, int], rng: random.Random, size: int) -> Image.Image:
    noise = [rng.randint(215, 255) for _ in range(size * size)]
    image = Image.new("L", (size, size))
    image.putdata(noise)
    image = image.convert("RGB")
    pen = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.22, 0.34)
    cx, cy = (size / 2 + rng.uniform(-0.12, 0.12) * size for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    tint = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in color)

    def polygon(corners: int, phase: float) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(phase + 2 * math.pi * i / corners),
                cy + radius * math.sin(phase + 2 * math.pi * i / corners),
            )
            for i in range(corners)
        ]

    if shape == "circle":
        pen.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=tint)
    elif shape == "square":
        pen.polygon(polygon(4, angle), fill=tint)
    elif shape == "triangle":
        pen.polygon(polygon(3, angle), fill=tint)
    elif shape == "ring":
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        pen.ellipse(box, outline=tint, width=max(2, int(radius / 3)))
    elif shape == "star":
        outer, inner = polygon(5, angle), []
        radius *= 0.45
        inner = polygon(5, angle + math.pi / 5)
        pen.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=tint)
    else:
        width = max(2, int(radius / 2.5))
        for a in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            pen.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=tint, width=width)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def write_images(out: Path, per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root = out / "images"
    for shape in SHAPES:
        for name, color in COLORS.items():
            folder = root / f"{shape}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                draw(shape, color, rng, size).save(folder / f"{i:02d}.png")
    return root


def write_table(out: Path, machines: int = 40, rows: int = 30, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path = out / "table.csv"
    out.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["machine", "temperature", "load", "vibration", "wear"])
        for m in range(machines):
            a, b, c = rng.uniform(0.5, 2.0), rng.uniform(-1.5, 1.5), rng.uniform(-0.5, 0.5)
            for _ in range(rows):
                temperature = rng.uniform(20, 90)
                load = rng.uniform(0, 1)
                vibration = rng.gauss(0, 1)
                wear = (
                    a * load + b * math.sin(temperature / 12) + c * vibration + rng.gauss(0, 0.05)
                )
                writer.writerow(
                    [
                        f"m{m:03d}",
                        round(temperature, 2),
                        round(load, 4),
                        round(vibration, 4),
                        round(wear, 4),
                    ]
                )
    return path


def write_example(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """The image folders and the table under ``out``; their paths."""
    return write_images(out, seed=seed), write_table(out, seed=seed)
