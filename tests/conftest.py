"""Shared fixtures: a fixed seed per test, the optional PyTorch oracle, and devices.

``device`` is the hook for running a test on every available device: a test
that takes it runs once with "cpu" and, where ``engine.cuda.is_available()``,
once more with "cuda" (marked ``gpu``). ``fake_cuda`` installs
``tests/fake_cupy.py`` as the engine's cupy for one test, so the GPU seam
(dispatch, transfers, device errors) is exercised on machines without a GPU.
"""

from __future__ import annotations

import pytest

import engine


@pytest.fixture(autouse=True)
def _seeded():
    engine.manual_seed(0)
    yield


def _devices():
    gpu = pytest.mark.gpu
    if engine.cuda.is_available():
        return ["cpu", pytest.param("cuda", marks=gpu)]
    reason = f"no CUDA device: {engine.cuda.unavailable_reason()}"
    return ["cpu", pytest.param("cuda", marks=[gpu, pytest.mark.skip(reason=reason)])]


@pytest.fixture(params=_devices())
def device(request):
    """"cpu", then "cuda" where a GPU is present (skipped with the reason otherwise)."""
    return request.param


@pytest.fixture
def fake_cuda(monkeypatch):
    """tests/fake_cupy.py as engine.backend.cupy for one test (restored afterwards)."""
    from tests import fake_cupy

    return fake_cupy.install(monkeypatch)


@pytest.fixture
def torch():
    """PyTorch, for differential tests; skipped cleanly when it is not installed."""
    return pytest.importorskip("torch")
