"""Fixtures for every test: a fixed seed; tests marked ``omniglot`` need the real Omniglot zips
(``OMNIGLOT_DIR``): without them they skip, or fail where ``REQUIRE_OMNIGLOT=1``."""

from pathlib import Path

import pytest
import torch

from tests.utils.omniglot import real_omniglot

ROOT = Path(__file__).resolve().parents[1]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("omniglot") is not None:
        real_omniglot()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
