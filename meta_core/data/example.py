"""``meta-core data example --out DIR``: a small dataset of each kind the project trains on
without code, generated here (nothing is downloaded), for the walkthrough in docs/training.md
("Your own data, no code") and the tests.

- ``DIR/images/<shape>-<color>/NN.png``: 36 classes (6 shapes x 6 colours), ``per_class``
  RGB drawings each, jittered in size, position and rotation over a noisy background.
- ``DIR/table.csv``: sensor readings of 40 machines (``machine``, ``temperature``, ``load``,
  ``vibration``), and each reading's ``wear``, which every machine relates to the readings in
  its own way (its own coefficients): a family of regression tasks, one per machine.
- ``DIR/sentences.csv``: customer messages (``text``), each with its ``intent`` (20 of them:
  a refund, a delivery, a password...) and the ``customer`` (a shop) it came to, written from
  templates and word lists: N-way K-shot text classification.
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


INTENTS = {
    "refund": ["I want my money back for the {item}", "please refund the {item} I returned"],
    "delivery": ["where is my {item}, it has not arrived", "the {item} is late, when will it come"],
    "password": ["I forgot my password", "how do I reset the password of my account"],
    "cancel": ["cancel my order of the {item}", "I no longer want the {item}, stop the order"],
    "invoice": ["send me the invoice for the {item}", "I need a receipt for my {item}"],
    "broken": ["the {item} arrived broken", "my {item} stopped working after a day"],
    "size": ["does the {item} come in a larger size", "the {item} is too small for me"],
    "discount": ["is there a discount code for the {item}", "can I get the {item} cheaper"],
    "address": ["I moved, please change my delivery address", "update the address on my account"],
    "opening": ["when does your shop open on {day}", "are you open on {day} morning"],
    "payment": ["my card was declined for the {item}", "can I pay for the {item} by transfer"],
    "thanks": ["thank you, the {item} is perfect", "great service, I love the {item}"],
    "stock": ["is the {item} back in stock", "when will you have the {item} again"],
    "warranty": ["is the {item} still under warranty", "how long is the guarantee on the {item}"],
    "gift": ["can you gift wrap the {item}", "I want to send the {item} as a present"],
    "newsletter": ["unsubscribe me from your emails", "stop sending me the newsletter"],
    "complaint": ["your staff was rude to me on {day}", "I am unhappy with how I was treated"],
    "exchange": ["can I swap the {item} for another colour", "I would like to exchange the {item}"],
    "login": ["I cannot log in to the app", "the website says my account is locked"],
    "tracking": ["send me the tracking number for my {item}", "how can I track the {item}"],
}
ITEMS = ("shoes", "jacket", "lamp", "phone case", "blender", "book", "chair", "headphones")
DAYS = ("monday", "friday", "saturday", "sunday", "the holiday")
OPENERS = ("", "hello, ", "hi, ", "good morning, ", "excuse me, ", "sorry to bother you, ")
CLOSERS = ("", ".", "!", "?", " thanks.", " please help.", " asap.")
CUSTOMERS = ("bookshop", "outdoor-store", "electronics")


def write_sentences(out: Path, per_class: int = 30, seed: int = 0) -> Path:
    """``out/sentences.csv``: ``per_class`` messages of each intent at each customer."""
    rng = random.Random(seed)
    path = out / "sentences.csv"
    out.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "intent", "customer"])
        for customer in CUSTOMERS:
            for intent, templates in INTENTS.items():
                for _ in range(per_class):
                    body = rng.choice(templates).format(
                        item=rng.choice(ITEMS), day=rng.choice(DAYS)
                    )
                    text = rng.choice(OPENERS) + body + rng.choice(CLOSERS)
                    writer.writerow([text[0].upper() + text[1:], intent, customer])
    return path


def write_example(out: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """The image folders, the table and the sentences under ``out``; their paths."""
    return (
        write_images(out, seed=seed),
        write_table(out, seed=seed),
        write_sentences(out, seed=seed),
    )
