"""Fixtures for every test: a fixed seed; tests marked ``omniglot`` need the real Omniglot zips
(``OMNIGLOT_DIR``), ``text_encoder`` the text encoder's package, ``wordnet`` Debian's
WordNet, ``espeak`` Debian's espeak-ng: without them they skip, or fail where CI asks for them
(``REQUIRE_...=1``)."""

from pathlib import Path

import pytest
import torch

from tests.utils.omniglot import real_omniglot
from tests.utils.recordings import require_espeak
from tests.utils.text import require_encoder, require_wordnet

ROOT = Path(__file__).resolve().parents[1]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("omniglot") is not None:
        real_omniglot()
    if item.get_closest_marker("text_encoder") is not None:
        require_encoder()
    if item.get_closest_marker("wordnet") is not None:
        require_wordnet()
    if item.get_closest_marker("espeak") is not None:
        require_espeak()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
