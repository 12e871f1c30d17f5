"""``engine.cuda``: what PyTorch's ``torch.cuda`` answers, backed by cupy when present."""

from __future__ import annotations

from engine import backend


def is_available() -> bool:
    return backend.cuda_available()


def device_count() -> int:
    return backend.cupy.cuda.runtime.getDeviceCount() if is_available() else 0


def synchronize() -> None:
    if is_available():
        backend.cupy.cuda.Device().synchronize()


def manual_seed(seed: int) -> None:
    from engine.creation import manual_seed as seed_all

    seed_all(seed)


manual_seed_all = manual_seed
