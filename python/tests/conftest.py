"""Fixtures shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def path(tmp_path):
    """A directory path for a new index."""
    return tmp_path / "index.milan"
