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
Kernels, streams and real memory pressure need a real GPU.

Several devices: ``install(monkeypatch, devices=N)`` makes N fake devices. As
in cupy, there is a current device per thread (``with cupy.cuda.Device(i):``,
``Device(i).use()``, ``cuda.runtime.getDevice/setDevice``); every device array
remembers the device it was allocated on (``array.device.id``); allocations
land on the current device, and ``asarray``/``array``/``.copy()`` of another
device's array copy it there (counted in ``transfers["between_devices"]``).
A kernel (ufunc, function, fancy index, ``astype``) given an array that is not
on the current device raises cupy's ``ValueError: The device where the array
resides (1) is different from the current device (0). Peer access is
unavailable between these devices.`` (with peer access, real cupy only warns,
but still allocates the result on the current device: the fake is the strict
case, so that it catches work run on the wrong device). Views and basic
indexing keep their base's device, as cupy's do.

Install it with ``install(monkeypatch)``: it replaces ``engine.backend.cupy``
and puts ``cupyx.scipy.special`` into ``sys.modules`` (restored afterwards).
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

import numpy

transfers = {"to_host": 0, "to_device": 0, "between_devices": 0}


def reset_transfers() -> None:
    transfers["to_host"] = transfers["to_device"] = transfers["between_devices"] = 0


_current = threading.local()  # the current device of this thread (CUDA's is per host thread)


def _current_device() -> int:
    return getattr(_current, "id", 0)


def _host_copy():
    transfers["to_host"] += 1


def _reject_host_arrays(values, where: str) -> None:
    """cupy refuses numpy arrays in device computations, and arrays of a device other than the
    current one (without peer access); so does the fake."""
    for value in values:
        if isinstance(value, (list, tuple)):
            _reject_host_arrays(value, where)
        elif isinstance(value, ndarray):
            _check_current(value, where)
        elif isinstance(value, numpy.ndarray):
            raise TypeError(f"Unsupported type {numpy.ndarray} (in fake cupy.{where}; move it with cupy.asarray)")


def _check_current(array, where: str) -> None:
    current = _current_device()
    if array._device_id != current:
        raise ValueError(
            f"The device where the array resides ({array._device_id}) is different from the current device "
            f"({current}). Peer access is unavailable between these devices. (in fake cupy.{where})"
        )


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
    """A "device" array: numpy's data under a type of its own, on one device."""

    def __array_finalize__(self, obj):
        # A view keeps its base's device; an array made from host data is on the current device.
        device_id = getattr(obj, "_device_id", None)
        self._device_id = _current_device() if device_id is None else device_id

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _reject_host_arrays(inputs, ufunc.__name__)
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"])
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        _reject_host_arrays(args, func.__name__)
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __getitem__(self, key):
        if isinstance(key, (numpy.ndarray, list)) or (
                isinstance(key, tuple) and any(isinstance(k, (numpy.ndarray, list)) for k in key)):
            _check_current(self, "__getitem__")  # advanced indexing is a kernel; basic indexing a view
        return _wrap(super().__getitem__(_unwrap(key)))

    def __setitem__(self, key, value):
        _reject_host_arrays([value], "__setitem__")
        super().__setitem__(_unwrap(key), _unwrap(value))

    @property
    def device(self):
        return cuda.Device(self._device_id)

    def astype(self, dtype, *args, **kwargs):
        result = super().astype(dtype, *args, **kwargs)
        if result is not self:  # a copy is a kernel, writing to the current device
            _check_current(self, "astype")
            result._device_id = _current_device()
        return result

    def copy(self, order="C"):
        """A copy on the current device (cupy copies across devices here)."""
        if self._device_id != _current_device():
            transfers["between_devices"] += 1
        result = super().copy(order)
        result._device_id = _current_device()
        return result

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
        raise TypeError("only integer scalar arrays can be converted to a scalar index (cupy arrays have no "
                        "__index__; fake cupy)")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly. (fake cupy)"
        )


# ---- the module namespace: numpy's functions on device arrays ----

_TRANSFERS_IN = {"array", "asarray", "ascontiguousarray", "asanyarray"}


def _device_function(name: str, fn):
    def call(*args, **kwargs):
        if _fusing[0]:
            if name not in FUSABLE_FUNCTIONS:
                raise TypeError(f"cupy.{name} cannot be called inside cupy.fuse (fake cupy)")
            return _proxy(call_outside(*_unproxy(args), **_unproxy(kwargs)))
        return call_outside(*args, **kwargs)

    def call_outside(*args, **kwargs):
        if name in _TRANSFERS_IN:
            if args and isinstance(args[0], numpy.ndarray) and not isinstance(args[0], ndarray):
                transfers["to_device"] += 1
            elif args and isinstance(args[0], ndarray) and args[0]._device_id != _current_device():
                transfers["between_devices"] += 1  # cupy copies another device's array to the current one
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
        if _fusing[0]:
            args, kwargs = _unproxy(args), _unproxy(kwargs)
        _reject_host_arrays(args, self.__name__)
        result = _wrap(self._ufunc(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        return _proxy(result) if _fusing[0] else result

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


def _installed(module: str):
    """The real module where cupy is installed (it imports without a GPU), else None."""
    try:
        return importlib.import_module(module)
    except Exception:  # not installed, or a CUDA library missing
        return None


class _Namespace(types.ModuleType):
    """A module whose missing attributes are numpy's (functions wrapped to give device arrays).

    Where cupy is installed (``.ci/run`` installs it; it imports without a GPU),
    a name the real module lacks is refused, so every fake-backed test also
    checks that the engine calls only functions cupy has.
    """

    def __init__(self, name: str, source, real=None):
        super().__init__(name)
        self._source = source
        self._real = real

    def __getattr__(self, name: str):
        if self._real is not None and not hasattr(self._real, name):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (the installed cupy lacks it)")
        value = getattr(self._source, name)
        if isinstance(value, numpy.ufunc):
            value = _DeviceUfunc(value)
        elif callable(value) and not isinstance(value, type):
            value = _device_function(name, value)
        setattr(self, name, value)
        return value


real_cupy = _installed("cupy")


def _refuse(name):
    def missing(self, *args, **kwargs):
        raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (fake cupy, as the installed cupy)")

    return property(missing) if name in ("ctypes",) else missing


# numpy's array members cupy's lacks (numpy's own protocol hooks stay: numpy calls them on the subclass).
NUMPY_ONLY_MEMBERS = ("ctypes", "getfield", "resize", "setfield", "setflags", "to_device", "__contains__",
                      "__imatmul__")
if real_cupy is not None:
    for _name in NUMPY_ONLY_MEMBERS:
        if not hasattr(real_cupy.ndarray, _name):
            setattr(ndarray, _name, _refuse(_name))
fake = _Namespace("cupy", numpy, real_cupy)
fake.ndarray = ndarray
fake.linalg = _Namespace("cupy.linalg", numpy.linalg, _installed("cupy.linalg"))
fake.is_fake = True


def asnumpy(array, stream=None):
    if isinstance(array, ndarray):
        _host_copy()
        return numpy.array(array.view(numpy.ndarray))
    return numpy.asarray(array)


def get_array_module(*args):
    return fake if any(isinstance(a, ndarray) for a in args) else numpy


# ---- cupy.fuse: the function traced on proxies, as cupy traces it ----

# The non-ufunc functions cupy lets a fused function call (those that check ``is_fusing()``).
FUSABLE_FUNCTIONS = {"where", "clip", "sum", "prod", "nansum", "nanprod", "amax", "amin", "all", "any",
                     "around", "copy", "copyto", "real", "imag"}
# What cupy's _ArrayProxy offers a fused function; anything else on an argument fails to trace.
PROXY_OPERATORS = ("add", "sub", "mul", "truediv", "floordiv", "mod", "and", "or", "xor", "lshift", "rshift")
PROXY_METHODS = ("copy", "astype", "sum", "prod", "max", "min", "all", "any")
PROXY_ATTRIBUTES = ("dtype", "ndim", "shape")

kernels = {"traced": 0, "launched": 0}
_fusing = [False]


class FusionProxy:
    """What a fused function receives for each array (cupy's ``_ArrayProxy``).

    It allows what cupy's proxy allows (operators, reflected and in-place,
    comparisons, ``-x``, the methods and attributes above, ``x[...] = v``) and
    nothing else: no ``abs(x)``, no ``2 ** x``, no ``if x > 0``, no other
    methods, no indexing. So a kernel the fake runs would also trace in cupy.
    """

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __bool__(self):
        raise TypeError("bool() of a value inside cupy.fuse (fake): data-dependent control flow cannot be traced")

    __float__ = __int__ = __bool__

    def __neg__(self):
        return FusionProxy(-self.array)

    def __invert__(self):
        return FusionProxy(~self.array)

    def __setitem__(self, index, value):
        if index is not Ellipsis and index != slice(None):
            raise ValueError("The fusion supports `[...]` or `[:]`. (fake cupy)")
        self.array[...] = _unproxy(value)

    def __getattr__(self, name):
        if name in PROXY_ATTRIBUTES:
            return getattr(self.array, name)
        if name in PROXY_METHODS:
            method = getattr(self.array, name)
            return lambda *args, **kwargs: _proxy(method(*_unproxy(args), **_unproxy(kwargs)))
        raise AttributeError(f"a value inside cupy.fuse has no attribute {name!r} (fake cupy)")


def _binary(name):
    forward, reflected, inplace = f"__{name}__", f"__r{name}__", f"__i{name}__"

    def op(self, other):
        return _proxy(getattr(self.array, forward)(_unproxy(other)))

    def rop(self, other):
        return _proxy(getattr(self.array, reflected)(_unproxy(other)))

    def iop(self, other):
        getattr(self.array, inplace)(_unproxy(other))
        return self

    return {forward: op, reflected: rop, inplace: iop}


for _name in PROXY_OPERATORS:
    for _dunder, _fn in _binary(_name).items():
        setattr(FusionProxy, _dunder, _fn)
FusionProxy.__pow__ = lambda self, other: _proxy(self.array ** _unproxy(other))
FusionProxy.__ipow__ = _binary("pow")["__ipow__"]
for _name in ("lt", "le", "eq", "ne", "ge", "gt"):
    setattr(FusionProxy, f"__{_name}__", _binary(_name)[f"__{_name}__"])


def _proxy(value):
    return FusionProxy(value) if isinstance(value, ndarray) else value


def _unproxy(value):
    if isinstance(value, FusionProxy):
        return value.array
    if isinstance(value, (list, tuple)):
        return type(value)(_unproxy(v) for v in value)
    if isinstance(value, dict):
        return {k: _unproxy(v) for k, v in value.items()}
    return value


def fuse(*args, kernel_name=None):
    """cupy.fuse: the function runs on ``FusionProxy`` arguments, so it must trace as cupy's would.

    Each call counts one kernel launch; scalars (Python numbers) pass as they are.
    """

    def decorate(fn):
        def kernel(*values):
            for value in values:
                if isinstance(value, numpy.ndarray) and not isinstance(value, ndarray):
                    raise TypeError(f"Unsupported type {numpy.ndarray} (in fake cupy.fuse)")
            _fusing[0] = True
            try:
                result = fn(*(_proxy(v) for v in values))
            finally:
                _fusing[0] = False
            kernels["launched"] += 1
            return _unproxy(result)

        kernel.__name__ = kernel_name or fn.__name__
        kernels["traced"] += 1
        return kernel

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate


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
    """cupy.cuda.Device: ``Device()`` is the current device; ``with Device(i):`` makes i current."""

    synchronized = 0

    def __init__(self, device=None):
        self.id = _current_device() if device is None else int(device)
        _check_ordinal(self.id)
        self._previous = []

    def __enter__(self):
        self._previous.append(_current_device())
        _current.id = self.id
        return self

    def __exit__(self, *exc):
        _current.id = self._previous.pop()
        return False

    def use(self):
        _current.id = self.id

    def synchronize(self):
        Device.synchronized += 1

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


def _check_ordinal(index: int) -> None:
    if not 0 <= index < runtime.device_count:
        raise RuntimeError(f"CUDARuntimeError: cudaErrorInvalidDevice: invalid device ordinal {index}")


class _Runtime:
    device_count = 1

    def getDeviceCount(self):
        return self.device_count

    def getDevice(self):
        return _current_device()

    def setDevice(self, index):
        _check_ordinal(int(index))
        _current.id = int(index)

    def getDeviceProperties(self, index):
        return {"name": b"Fake CUDA device (numpy)", "totalGlobalMem": 1 << 30, "major": 9, "minor": 0,
                "multiProcessorCount": 132}

    def memGetInfo(self):
        return (1 << 30) - memory_pool.total_bytes(), 1 << 30


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
cupyx.scipy.special = _Namespace(
    "cupyx.scipy.special", __import__("scipy.special").special, _installed("cupyx.scipy.special")
)


def install(monkeypatch, devices: int = 1):
    """Make ``engine.backend`` see this module as cupy, with ``devices`` fake devices, device 0
    current (undone by monkeypatch)."""
    from engine import backend

    monkeypatch.setattr(backend, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)
    monkeypatch.setattr(runtime, "device_count", devices)
    monkeypatch.setattr(_current, "id", 0, raising=False)
    memory_pool.limit = 0
    Device.synchronized = 0
    reset_transfers()
    return fake
