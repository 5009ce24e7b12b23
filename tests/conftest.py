"""Fixtures for every test: a fixed seed; the Omniglot data of the build machines."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The tests read Omniglot from the shared copy beside the checkout unless OMNIGLOT_DIR says
# otherwise (the project's own default is the git-ignored ./data/omniglot).
os.environ.setdefault("OMNIGLOT_DIR", str(ROOT.parent / "shared" / "data" / "omniglot"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
