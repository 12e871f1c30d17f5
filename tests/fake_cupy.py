"""A numpy-backed stand-in for the small part of cupy that ``engine.backend`` uses.

It lets the CPU-only test suite exercise the GPU seam: device dispatch
(``namespace_of``/``device_of`` pick this module for its arrays), explicit
transfers (``asarray``/``asnumpy``), the same-device check, the memory pool
limit and the out-of-memory error. It runs no kernels: every function
delegates to numpy and re-wraps the result as ``ndarray``, a numpy subclass
whose type is not ``numpy.ndarray`` (as cupy's is not).

Where cupy's behaviour matters for those paths, the fake copies it:

- mixing a host array (a plain ``numpy.ndarray``) into a device computation
  raises cupy's ``TypeError: Unsupported type <class 'numpy.ndarray'>``;
- reductions and scalar indexing give 0-d device arrays, never host scalars;
- every device -> host copy (``asnumpy``, ``.get()``, ``.item()``,
  ``.tolist()``, ``float()``/``int()``/``bool()``) is counted in ``transfers``,
  so a test can assert that an op ran without a host round trip.

What the fake cannot catch: ``numpy.asarray(device_array)`` silently gives a
host view (numpy never asks a subclass's ``__array__``), where cupy raises
``TypeError: Implicit conversion to a NumPy array is not allowed``; the engine's
own checks of ``type(array) is numpy.ndarray`` are what the distinct type tests.
Kernels, streams, several devices and real memory pressure need a real GPU.

Install it with ``install(monkeypatch)``: it replaces ``engine.backend.cupy``
and puts ``cupyx.scipy.special`` into ``sys.modules`` (restored afterwards).
"""

from __future__ import annotations

import sys
import types

import numpy

transfers = {"to_host": 0, "to_device": 0}


def reset_transfers() -> None:
    transfers["to_host"] = transfers["to_device"] = 0


def _host_copy():
    transfers["to_host"] += 1


def _reject_host_arrays(values, where: str) -> None:
    """cupy refuses numpy arrays in device computations; so does the fake."""
    for value in values:
        if isinstance(value, (list, tuple)):
            _reject_host_arrays(value, where)
        elif isinstance(value, numpy.ndarray) and not isinstance(value, ndarray):
            raise TypeError(f"Unsupported type {numpy.ndarray} (in fake cupy.{where}; move it with cupy.asarray)")


def _wrap(result):
    """numpy results as device arrays: arrays re-typed, host scalars made 0-d arrays (as cupy's)."""
    if isinstance(result, ndarray):
        return result
    if isinstance(result, numpy.ndarray):
        return result.view(ndarray)
    if isinstance(result, numpy.generic):
        return numpy.asarray(result).view(ndarray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _unwrap(value):
    if isinstance(value, ndarray):
        return value.view(numpy.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


class ndarray(numpy.ndarray):  # noqa: N801 - cupy's name
    """A "device" array: numpy's data under a type of its own."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _reject_host_arrays(inputs, ufunc.__name__)
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        _reject_host_arrays(args, func.__name__)
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __getitem__(self, key):
        return _wrap(super().__getitem__(_unwrap(key)))

    def __setitem__(self, key, value):
        _reject_host_arrays([value], "__setitem__")
        super().__setitem__(_unwrap(key), _unwrap(value))

    @property
    def device(self):
        return cuda.Device(0)

    # ---- explicit device -> host copies (counted) ----

    def get(self):
        _host_copy()
        return numpy.array(self.view(numpy.ndarray))

    def item(self, *args):
        _host_copy()
        return self.view(numpy.ndarray).item(*args)

    def tolist(self):
        _host_copy()
        return self.view(numpy.ndarray).tolist()

    def __float__(self):
        _host_copy()
        return float(self.view(numpy.ndarray))

    def __int__(self):
        _host_copy()
        return int(self.view(numpy.ndarray))

    def __bool__(self):
        _host_copy()
        return bool(self.view(numpy.ndarray))

    def __index__(self):
        _host_copy()
        return self.view(numpy.ndarray).__index__()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly. (fake cupy)"
        )


# ---- the module namespace: numpy's functions on device arrays ----

_TRANSFERS_IN = {"array", "asarray", "ascontiguousarray", "asanyarray"}


def _device_function(name: str, fn):
    def call(*args, **kwargs):
        if name in _TRANSFERS_IN:
            if args and isinstance(args[0], numpy.ndarray) and not isinstance(args[0], ndarray):
                transfers["to_device"] += 1
            args = _unwrap(args)
        else:
            _reject_host_arrays(args, name)
            _reject_host_arrays(kwargs.values(), name)
            args, kwargs = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
        return _wrap(fn(*args, **kwargs))

    call.__name__ = name
    return call


class _DeviceUfunc:
    """A numpy ufunc that, like cupy's, refuses host arrays (``.at``, ``.reduce`` ... included)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        _reject_host_arrays(args, self.__name__)
        return _wrap(self._ufunc(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __getattr__(self, method: str):
        bound = getattr(self._ufunc, method)
        if not callable(bound):
            return bound

        def call(array, *args, **kwargs):
            if method == "at":  # in place on the array itself; the index may be host arrays (cupy moves them)
                _reject_host_arrays((array, *args[1:]), f"{self.__name__}.at")
                return bound(array.view(numpy.ndarray), *_unwrap(args), **kwargs)
            _reject_host_arrays((array, *args), f"{self.__name__}.{method}")
            return _wrap(bound(*_unwrap((array, *args)), **kwargs))

        return call


class _Namespace(types.ModuleType):
    """A module whose missing attributes are numpy's (functions wrapped to give device arrays)."""

    def __init__(self, name: str, source):
        super().__init__(name)
        self._source = source

    def __getattr__(self, name: str):
        value = getattr(self._source, name)
        if isinstance(value, numpy.ufunc):
            value = _DeviceUfunc(value)
        elif callable(value) and not isinstance(value, type):
            value = _device_function(name, value)
        setattr(self, name, value)
        return value


fake = _Namespace("cupy", numpy)
fake.ndarray = ndarray
fake.linalg = _Namespace("cupy.linalg", numpy.linalg)
fake.is_fake = True


def asnumpy(array, stream=None):
    if isinstance(array, ndarray):
        _host_copy()
        return numpy.array(array.view(numpy.ndarray))
    return numpy.asarray(array)


def get_array_module(*args):
    return fake if any(isinstance(a, ndarray) for a in args) else numpy


def fuse(*args, **kwargs):
    """cupy.fuse compiles a kernel; the fake runs the Python function as it is."""
    if args and callable(args[0]):
        return args[0]
    return lambda fn: fn


fake.asnumpy = asnumpy
fake.get_array_module = get_array_module
fake.fuse = fuse


# ---- cuda: devices, the runtime, events, the memory pool ----


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError: the requested size, what the pool held, and its limit."""

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        limit_text = f", limit set to: {limit:,} bytes" if limit else ""
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes{limit_text}).")


class Device:
    synchronized = 0

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if not 0 <= self.id < runtime.device_count:
            raise RuntimeError(f"CUDARuntimeError: cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        Device.synchronized += 1

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class _Runtime:
    device_count = 1

    def getDeviceCount(self):
        return self.device_count

    def getDeviceProperties(self, index):
        return {"name": b"Fake CUDA device (numpy)", "totalGlobalMem": 1 << 30}


class MemoryPool:
    def __init__(self):
        self.limit = 0

    def set_limit(self, size=None, fraction=None):
        self.limit = int(size or 0)

    def get_limit(self):
        return self.limit

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


class Event:
    """A CUDA event on a fake clock that advances one microsecond per recorded event."""

    clock_us = 0

    def __init__(self, *args, **kwargs):
        self.time_us = None

    def record(self, stream=None):
        Event.clock_us += 1
        self.time_us = Event.clock_us

    def synchronize(self):
        pass


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two recorded events, as cupy.cuda.get_elapsed_time."""
    return (end.time_us - start.time_us) / 1000.0


runtime = _Runtime()
cuda = types.SimpleNamespace(
    Device=Device,
    runtime=runtime,
    Event=Event,
    get_elapsed_time=get_elapsed_time,
    memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
)
memory_pool = MemoryPool()
fake.cuda = cuda
fake.get_default_memory_pool = lambda: memory_pool

# cupyx.scipy.special, as engine.backend imports it for erf and expit.
cupyx = types.ModuleType("cupyx")
cupyx.scipy = types.ModuleType("cupyx.scipy")
cupyx.scipy.special = _Namespace("cupyx.scipy.special", __import__("scipy.special").special)


def install(monkeypatch):
    """Make ``engine.backend`` see this module as cupy, with one fake device (undone by monkeypatch)."""
    from engine import backend

    monkeypatch.setattr(backend, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)
    monkeypatch.setattr(runtime, "device_count", 1)
    memory_pool.limit = 0
    Device.synchronized = 0
    reset_transfers()
    return fake
