"""Shared fixtures: a fixed seed per test, the optional PyTorch oracle, and devices.

``device`` is the hook for running a test on every available device: a test
that takes it runs once with "cpu" and, where ``engine.cuda.is_available()``,
once more with "cuda" (marked ``gpu``). ``fake_cuda`` installs
``tests/fake_cupy.py`` as the engine's cupy for one test, so the GPU seam
(dispatch, transfers, device errors) is exercised on machines without a GPU.

``pytest --device cuda`` (or ``fake-cuda``) runs a whole suite on the GPU (or
the fake): every tensor a test creates without naming a device lands there.
``make test`` runs the engine suite a second time that way on the fake; tests
marked ``host_only`` (reprs, numpy memory sharing, and the device tests, which
place tensors themselves) keep the CPU default.
"""

from __future__ import annotations

import pytest

import engine


def pytest_addoption(parser):
    parser.addoption(
        "--device", default="cpu", choices=("cpu", "cuda", "fake-cuda"),
        help="the default device of the engine tests: cuda runs the whole engine suite with tensors on the "
             "GPU; fake-cuda on tests/fake_cupy.py (no GPU needed)",
    )


@pytest.fixture(autouse=True)
def _seeded():
    engine.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _default_device(request, monkeypatch):
    """With ``--device cuda`` or ``fake-cuda``, every tensor a test creates without naming a device
    lands on the GPU, and ``.numpy()`` reads it back, so the same assertions check the device."""
    choice = request.config.getoption("--device")
    if choice == "cpu" or request.node.get_closest_marker("host_only"):
        yield
        return
    if choice == "fake-cuda":
        from tests import fake_cupy

        fake_cupy.install(monkeypatch)
    elif not engine.cuda.is_available():
        pytest.skip(f"--device cuda: {engine.cuda.unavailable_reason()}")
    from engine.tensor import Tensor

    monkeypatch.setattr(Tensor, "numpy", lambda self, *, force=False: engine.backend.to_numpy(self.detach()._data))
    with engine.device("cuda"):
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
