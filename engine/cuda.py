"""``engine.cuda``: what PyTorch's ``torch.cuda`` answers, backed by cupy when present.

Everything here asks ``engine.backend`` (the one module that imports cupy), so
on a machine without cupy or without a GPU it answers "no devices" instead of
failing: ``is_available()`` is False, ``device_count()`` 0, ``synchronize()``
does nothing, and placing a tensor on ``"cuda"`` raises a RuntimeError that
says what is missing (``unavailable_reason()``).

Several GPUs: as in PyTorch, each thread has a current device (``current_device``,
``set_device``, ``with device(i):``); "cuda" without an index means it. A tensor on
``cuda:1`` runs its ops on device 1 whatever is current (apply makes the tensor's
device current for the op when it is not already), and its gradients land there.

Random numbers: every device draws from the same seeded generator (on the
host, then copied), so ``manual_seed(s)`` makes both CPU and CUDA draws
reproducible, and a CUDA draw equals the CPU draw that the same seed gives.
"""

from __future__ import annotations

from engine import backend


def is_available() -> bool:
    return backend.cuda_available()


def device_count() -> int:
    return backend.cuda_device_count()


def unavailable_reason() -> str | None:
    """Why device 'cuda' cannot be used here (None when it can)."""
    return backend.cuda_unavailable_reason()


def current_device() -> int:
    """The index of this thread's current CUDA device: where ``"cuda"`` without an index puts
    tensors (``.cuda()``, ``zeros(..., device="cuda")``)."""
    _require()
    return backend.current_cuda_device()


def set_device(device) -> None:
    """Make ``device`` (an index, "cuda:1" or an engine.device) current in this thread."""
    _require()
    backend.set_current_cuda_device(_index(device))


class device:  # noqa: N801 - PyTorch's name
    """``with engine.cuda.device(1):`` makes CUDA device 1 current inside the block (None: no change)."""

    def __init__(self, device):
        self.index = None if device is None else _index(device)
        self._scope = None

    def __enter__(self):
        if self.index is not None:
            _require()
            self._scope = backend.on_device(backend.Device("cuda", self.index))
            self._scope.__enter__()
        return self

    def __exit__(self, *exc):
        if self._scope is not None:
            self._scope.__exit__(*exc)
            self._scope = None
        return False


def _index(device) -> int:
    if isinstance(device, int):
        return device
    dev = backend.device(device)
    if dev.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {dev}")
    return dev.index


def synchronize(device=None) -> None:
    """Wait for the GPU's queued work; a no-op without a GPU (as timing code expects)."""
    backend.synchronize(None if device is None else backend.device(_device_spec(device)))


def manual_seed(seed: int) -> None:
    """Seed the random numbers of CUDA tensors (shared with the CPU's: see the module docstring)."""
    from engine.creation import manual_seed as seed_all

    seed_all(seed)


manual_seed_all = manual_seed


def set_per_process_memory_limit(limit_bytes: int | None) -> None:
    """Cap the GPU memory pool at ``limit_bytes`` (None or 0 lifts the cap); needs a GPU."""
    backend.set_memory_limit(limit_bytes)


def memory_allocated(device=None) -> int:
    """Bytes of the GPU memory pool in use on ``device`` (None: the current one)."""
    return backend.memory_stats(_optional_index(device))["used_bytes"]


def memory_reserved(device=None) -> int:
    """Bytes the GPU memory pool holds on ``device``, in use or cached."""
    return backend.memory_stats(_optional_index(device))["total_bytes"]


def empty_cache() -> None:
    """Give cached, unused GPU memory back to the driver; a no-op without a GPU."""
    backend.free_cached_memory()


def mem_get_info(device=None) -> tuple[int, int]:
    """``(free, total)`` bytes on ``device``, as the driver reports them."""
    props = backend.device_properties(_current_if_none(device))
    return props["free_memory"], props["total_memory"]


class _CudaDeviceProperties:
    """What ``get_device_properties`` returns: PyTorch's attribute names."""

    def __init__(self, props: dict):
        self.name = props["name"]
        self.total_memory = props["total_memory"]
        self.major, self.minor = props["major"], props["minor"]
        self.multi_processor_count = props["multi_processor_count"]

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, minor={self.minor}, "
                f"total_memory={self.total_memory // (1 << 20)}MB, "
                f"multi_processor_count={self.multi_processor_count})")


def get_device_properties(device=None) -> _CudaDeviceProperties:
    return _CudaDeviceProperties(backend.device_properties(_current_if_none(device)))


def get_device_name(device=None) -> str:
    return backend.device_properties(_current_if_none(device))["name"]


def get_device_capability(device=None) -> tuple[int, int]:
    props = backend.device_properties(_current_if_none(device))
    return props["major"], props["minor"]


def _optional_index(device) -> int | None:
    return None if device is None else _index(device)


def _current_if_none(device) -> int:
    if device is None:
        _require()
        return backend.current_cuda_device()
    return _index(device)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the GPU memory pool running out (cupy's OutOfMemoryError)."""
    cls = backend.out_of_memory_error()
    return cls is not None and isinstance(error, cls)


def _device_spec(device):
    return f"cuda:{device}" if isinstance(device, int) else device


def _require() -> None:
    reason = backend.cuda_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"CUDA is not available: {reason}")
