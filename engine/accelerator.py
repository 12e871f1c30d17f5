"""``engine.accelerator``: PyTorch's device-generic view of the current accelerator.

The engine has one kind of accelerator, CUDA through cupy, so these answer for
it: ``current_accelerator()`` is ``device("cuda")`` when a GPU can be used and
None otherwise, as in PyTorch on a machine without one.
"""

from __future__ import annotations

from engine import backend, cuda

__all__ = ["current_accelerator", "device_count", "is_available"]


def is_available() -> bool:
    """Whether an accelerator (a CUDA GPU usable through cupy) is present."""
    return cuda.is_available()


def device_count() -> int:
    """How many accelerator devices can be used (0 without one)."""
    return cuda.device_count() if cuda.is_available() else 0


def current_accelerator(check_available: bool = False):
    """The accelerator's device type as a ``device`` (``device(type='cuda')``), or None without one."""
    if not cuda.is_available():
        return None
    return backend.Device("cuda")


def current_device_index() -> int:
    """The index of the current accelerator device (PyTorch's ``current_device_index``)."""
    if not cuda.is_available():
        return -1
    return cuda.current_device()
