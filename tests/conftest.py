"""Shared fixtures: a fixed seed per test, and the optional PyTorch oracle."""

from __future__ import annotations

import pytest

import engine


@pytest.fixture(autouse=True)
def _seeded():
    engine.manual_seed(0)
    yield


@pytest.fixture
def torch():
    """PyTorch, for differential tests; skipped cleanly when it is not installed."""
    return pytest.importorskip("torch")
