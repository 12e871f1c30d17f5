"""The one module that imports numpy (and cupy when present).

Everything else in the engine receives an array namespace ``xp`` from here:
which namespace a tensor uses follows from its device. This module also owns
the engine's dtypes and devices, where work runs (``op_placement`` for a table
op, ``on_device`` for the rest), and ``sum_to_shape``, the single helper that
folds a broadcast gradient back onto an input's shape.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy
import scipy.special

try:  # the GPU backend is optional: cupy is only importable where CUDA is
    import cupy
except Exception:  # ImportError, or a CUDA runtime error on a machine with no driver
    cupy = None

from engine import thread_pools

np = numpy
ndarray = numpy.ndarray

# numpy's BLAS is loaded now: one thread per operation unless the environment chose a
# number (engine.thread_pools says why).
thread_pools.apply_default()


# ---- dtypes ----------------------------------------------------------------


class DType:
    """A tensor element type; prints like PyTorch's (``engine.float32``)."""

    __slots__ = ("is_floating_point", "itemsize", "name", "np")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.np = numpy.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f"
        self.itemsize = self.np.itemsize

    def __repr__(self) -> str:
        return f"engine.{self.name}"

    def __reduce__(self):
        return (dtype, (self.name,))


float16 = DType("float16", numpy.float16)
float32 = DType("float32", numpy.float32)
float64 = DType("float64", numpy.float64)
int32 = DType("int32", numpy.int32)
int64 = DType("int64", numpy.int64)
bool_ = DType("bool", numpy.bool_)

DTYPES = {d.name: d for d in (float16, float32, float64, int32, int64, bool_)}
ALIASES = {"float": float32, "double": float64, "half": float16, "int": int32, "long": int64}
_BY_NUMPY = {d.np: d for d in DTYPES.values()}

default_dtype = float32


def dtype(spec) -> DType:
    """Resolve ``spec`` (a DType, a name such as "float32" or "double", or a numpy dtype)."""
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        found = DTYPES.get(spec) or ALIASES.get(spec)
        if found is None:
            raise TypeError(f"unknown dtype {spec!r}; expected one of {sorted(DTYPES)}")
        return found
    try:
        return _BY_NUMPY[numpy.dtype(spec)]
    except (KeyError, TypeError):
        raise TypeError(f"unsupported dtype {spec!r}; expected one of {sorted(DTYPES)}") from None


def dtype_of(array) -> DType:
    """The engine dtype of an array (arrays of other numpy dtypes are not made by the engine)."""
    return _BY_NUMPY[array.dtype]


# ---- devices ---------------------------------------------------------------


class Device:
    """Where a tensor lives: ``device(type='cpu')`` or ``device(type='cuda', index=0)``.

    ``with engine.device("cuda"):`` makes it the default device of the creation functions
    inside the block, as in PyTorch (per context, like grad mode).
    """

    __slots__ = ("index", "type")

    def __init__(self, type: str, index: int | None = None):  # noqa: A002 - PyTorch's name
        self.type = type
        self.index = index

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, Device) and (self.type, self.index or 0) == (other.type, other.index or 0)

    def __hash__(self) -> int:
        return hash((self.type, self.index or 0))

    def __enter__(self) -> Device:
        _device_tokens.set((*_device_tokens.get(), _default_device.set(self)))
        return self

    def __exit__(self, *exc) -> None:
        *rest, token = _device_tokens.get()
        _device_tokens.set(tuple(rest))
        _default_device.reset(token)


CPU = Device("cpu")
# Where creation functions put tensors when not told (engine.set_default_device, ``with device``):
# a ContextVar, so that concurrent requests on different devices do not see each other's.
_default_device = contextvars.ContextVar("default_device", default=CPU)
_device_tokens: contextvars.ContextVar = contextvars.ContextVar("device_tokens", default=())


def get_default_device() -> Device:
    return _default_device.get()


def set_default_device(spec) -> None:
    """Creation functions put tensors on ``spec`` (None: the CPU) from now on, in this context."""
    _default_device.set(device(spec) if spec is not None else CPU)


def device(spec=None, index: int | None = None) -> Device:
    """Resolve "cpu", "cuda", "cuda:1", ("cuda", 1) or a Device (which device exists is checked
    where arrays are placed, by ``namespace``)."""
    if spec is None:
        return _default_device.get()
    if isinstance(spec, Device):
        return spec
    if index is not None and isinstance(spec, str) and ":" not in spec:
        spec = f"{spec}:{int(index)}"
    if not isinstance(spec, str):
        raise TypeError(f"expected a device string such as 'cpu' or 'cuda', got {spec!r}")
    kind, _, index = spec.partition(":")
    if kind == "cpu":
        return CPU
    if kind == "cuda":
        # "cuda" without an index is the current device (engine.cuda.set_device), as in PyTorch.
        return Device("cuda", int(index) if index else current_cuda_device())
    raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {spec}")


def current_cuda_device() -> int:
    """The ordinal of this thread's current CUDA device (0 without a GPU)."""
    if cupy is None:
        return 0
    try:
        return int(cupy.cuda.runtime.getDevice())
    except Exception:  # no driver: the error comes from namespace(), which says what is missing
        return 0


def set_current_cuda_device(index: int) -> None:
    """Make CUDA device ``index`` current in this thread (it must exist)."""
    namespace(Device("cuda", index))
    cupy.cuda.runtime.setDevice(int(index))


def cuda_device_count() -> int:
    if cupy is None:
        return 0
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, or a driver too old for this cupy
        return 0


def cuda_available() -> bool:
    return cuda_device_count() > 0


def cuda_unavailable_reason() -> str | None:
    """What is missing for device 'cuda' (None when a GPU is usable): the text of every such error."""
    if cupy is None:
        return "cupy is not installed (pip install 'gradserve[gpu]', which pulls cupy-cuda12x)"
    if not cuda_available():
        return "cupy is installed but finds no CUDA device (no NVIDIA driver or no visible GPU)"
    return None


def namespace(dev: Device):
    """The array namespace for a device: numpy on the CPU, cupy on CUDA."""
    if dev.type == "cpu":
        return numpy
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"device '{dev}' was requested but CUDA is not available here: {reason}; use device='cpu'")
    count = cuda_device_count()
    if not 0 <= (dev.index or 0) < count:
        raise RuntimeError(f"CUDA error: invalid device ordinal: {dev} requested, {count} device(s) visible")
    return cupy


def device_of(array) -> Device:
    if cupy is not None and isinstance(array, cupy.ndarray):
        return Device("cuda", array.device.id)
    return CPU


def namespace_of(array):
    """numpy or cupy, whichever owns ``array``."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy
    return numpy


def is_array(value) -> bool:
    return isinstance(value, numpy.ndarray) or (cupy is not None and isinstance(value, cupy.ndarray))


def aliases(view, array) -> bool:
    """Whether ``view`` may share memory with ``array``: a view op's result does unless the op
    had to copy (a reshape of a non-contiguous array, advanced indexing)."""
    if view is array:
        return True
    if view.base is None:
        return False
    return bool(namespace_of(view).may_share_memory(view, array))


def to_device(array, dev: Device):
    """Copy an array to ``dev`` (a no-op when it is already there)."""
    if device_of(array) == dev:
        return array
    if dev.type == "cpu":
        return cupy.asnumpy(array)
    namespace(dev)  # says what is missing when there is no GPU
    with cupy.cuda.Device(dev.index or 0):
        return cupy.asarray(array)


# ---- placement: on which device work runs ------------------------------------
#
# cupy runs kernels, and allocates their results, on the thread's current CUDA device, and
# refuses arrays of another device. So whatever computes on device arrays must first make
# their device current. These two functions are the one place that decides it: the autograd
# machinery calls ``op_placement`` once per table op (``engine.autograd.function.apply``), and
# ``on_device`` wherever else it works on arrays itself (seeds and nodes of a backward pass,
# in-place writes, optimizer updates, creation functions, ``engine.cuda.device``).


def on_device(where):
    """A context manager under which kernels run, and arrays are allocated, on ``where`` (a
    Device, or an array: its device), restoring the current CUDA device on exit. A no-op for
    the CPU and host arrays. A CUDA Device is checked first (what is missing, or a bad ordinal)."""
    if isinstance(where, Device):
        if where.type == "cpu":
            return _NO_SCOPE
        namespace(where)
        return cupy.cuda.Device(where.index)
    if cupy is not None and isinstance(where, cupy.ndarray):
        return cupy.cuda.Device(where.device.id)
    return _NO_SCOPE


_NO_SCOPE = contextlib.nullcontext()


def op_placement(arrays, op_name: str, scalars_move: bool):
    """Where a table op on the tensors holding ``arrays`` runs, as PyTorch decides it.

    Returns ``(scalars_to, scope)``. ``scalars_to`` is the CUDA device that the
    op's 0-d CPU arrays must be moved to first (None when there are none to
    move): with ``scalars_move`` (elementwise broadcasting ops, PyTorch's
    TensorIterator ops), a 0-d CPU tensor may join an op on a CUDA device.
    ``scope`` is a context manager making the op's device current, or None
    when it is current already or the op runs on the host. Any other mix of
    devices raises PyTorch's "Expected all tensors to be on the same device".
    """
    first = arrays[0]
    kind = type(first)
    if all(type(a) is kind for a in arrays):
        if cupy is None or kind is not cupy.ndarray:
            return None, None  # host arrays (numpy subclasses among them)
        index = first.device.id
        if all(a.device.id == index for a in arrays):
            return None, None if index == cupy.cuda.runtime.getDevice() else cupy.cuda.Device(index)
    devices = [device_of(a) for a in arrays]
    movable = [scalars_move and d.type == "cpu" and a.ndim == 0 for a, d in zip(arrays, devices)]
    # The op's device: the first tensor's, skipping the CPU scalars that may move.
    target = next((d for d, m in zip(devices, movable) if not m), devices[0])
    for dev, m in zip(devices, movable):
        if dev != target and not m:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, "
                f"{target} and {dev}! (when checking arguments for {op_name})"
            )
    # A CPU target leaves nothing to move: those arrays differed only in type (numpy subclasses).
    return (None if target.type == "cpu" else target), None


def call_on_device_of(value, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the device of ``value`` (a tensor, an array, or a tuple or list
    whose first element is one): for functions that make arrays themselves, outside apply
    (Jacobian blocks, loss masks)."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    with on_device(getattr(value, "_data", value)):
        return fn(*args, **kwargs)


def placement(spec) -> tuple:
    """``(device, xp, scope)`` for making arrays on ``spec`` (a device string, a Device or None for
    the default): its namespace, and ``on_device`` for it."""
    dev = device(spec)
    return dev, namespace(dev), on_device(dev)


# ---- the GPU runtime: synchronization, the memory pool, out-of-memory ------


def synchronize(dev: Device | None = None) -> None:
    """Wait for every kernel queued on ``dev`` (the current CUDA device when None)."""
    if cuda_available():
        cupy.cuda.Device(None if dev is None else dev.index or 0).synchronize()


def set_memory_limit(limit_bytes: int | None) -> None:
    """Cap cupy's default memory pool (None or 0: no cap). Allocations past it raise
    ``out_of_memory_error()``, as an exhausted GPU does."""
    namespace(Device("cuda", 0))
    cupy.get_default_memory_pool().set_limit(size=int(limit_bytes or 0))


def memory_stats(index: int | None = None) -> dict:
    """The default memory pool's bytes in use, held, and its limit (0: none) on CUDA device
    ``index`` (None: the current one); zeros without a GPU. cupy keeps one pool per device."""
    if not cuda_available():
        return {"used_bytes": 0, "total_bytes": 0, "limit_bytes": 0}
    with cupy.cuda.Device(index):
        pool = cupy.get_default_memory_pool()
        return {"used_bytes": int(pool.used_bytes()), "total_bytes": int(pool.total_bytes()),
                "limit_bytes": int(pool.get_limit())}


def free_cached_memory() -> None:
    """Give the memory pool's unused blocks back to the driver (PyTorch's ``empty_cache``)."""
    if cuda_available():
        cupy.get_default_memory_pool().free_all_blocks()


def device_properties(index: int) -> dict:
    """What the driver says of CUDA device ``index``: name, memory, compute capability, SMs."""
    namespace(Device("cuda", index))  # says what is missing, or that the ordinal is invalid
    props = cupy.cuda.runtime.getDeviceProperties(int(index))
    name = props["name"]
    with cupy.cuda.Device(int(index)):
        free, _ = cupy.cuda.runtime.memGetInfo()
    return {
        "index": int(index),
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "total_memory": int(props["totalGlobalMem"]),
        "free_memory": int(free),
        "major": int(props["major"]),
        "minor": int(props["minor"]),
        "multi_processor_count": int(props["multiProcessorCount"]),
    }


def out_of_memory_error() -> type | None:
    """cupy's ``OutOfMemoryError`` class (a MemoryError), or None without cupy."""
    if cupy is None:
        return None
    return cupy.cuda.memory.OutOfMemoryError


def to_numpy(array):
    """A numpy view or copy of any backend's array."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)  # numpy arrays as they are; numpy scalars as 0-d arrays


# ---- special functions -----------------------------------------------------


def special(xp):
    """The special-function ufuncs (``erf``, ``expit``) for namespace ``xp``: scipy's for numpy,
    cupyx's for cupy. Both are ufuncs, so they also work inside ``fused`` kernels."""
    if xp is numpy:
        return scipy.special
    import cupyx.scipy.special

    return cupyx.scipy.special


def erf(array):
    return special(namespace_of(array)).erf(array)


def expit(array):
    """The logistic sigmoid, stable for large |x| (no overflow warnings)."""
    return special(namespace_of(array)).expit(array)


# ---- fused elementwise kernels ---------------------------------------------


def _typed_scalars(args) -> tuple:
    """Python floats as scalars of the arrays' floating dtype: a float32 kernel then computes in
    float32 whether or not cupy takes a Python scalar argument as float64 (numpy's weak scalars
    make no difference on the CPU, where these stay Python floats)."""
    dtype = next((a.dtype for a in args if getattr(a, "dtype", None) is not None and a.dtype.kind == "f"), None)
    if dtype is None:
        return args
    return tuple(dtype.type(a) if type(a) is float else a for a in args)


def fused(expr):
    """``expr(xp, *args)`` as one kernel on the GPU; as written on the CPU.

    ``expr`` is elementwise: operators, ufuncs of ``xp`` or ``special(xp)``,
    ``xp.where``, in-place operators and a positional ``out`` on its array
    arguments (an optimizer's update). numpy evaluates it op by op. On cupy,
    ``cupy.fuse`` traces it once and compiles a single kernel, which cupy
    caches per argument dtypes and ranks: a chain of n elementwise steps then
    reads and writes memory once instead of n times, which is what such
    chains are bound by on a GPU. Scalars are arguments, not constants baked
    into the kernel, so a learning rate or a bias correction that changes
    every step reuses the compiled kernel.
    """
    kernels = {}

    def run(xp, *args, **params):
        if xp is numpy:
            return expr(numpy, *args, **params)
        # Keyword params (gelu's ``approximate``) are compile-time constants of the kernel.
        key = (xp, *sorted(params.items()))
        kernel = kernels.get(key)
        if kernel is None:

            def kernel(*values):
                return expr(xp, *values, **params)

            kernel = kernels[key] = xp.fuse(kernel_name=f"gradserve_{expr.__name__.strip('_')}")(kernel)
        return kernel(*_typed_scalars(args))

    run.__name__ = expr.__name__
    run.__wrapped__ = expr  # inspect.signature (the derivative table reads input names) sees expr's
    run.__doc__ = expr.__doc__
    return run


# ---- shapes ----------------------------------------------------------------


def sum_to_shape(g, shape: tuple, lead: int = 0):
    """Sum array ``g`` over the axes broadcasting added, so that it has ``shape``.

    The first ``lead`` axes of ``g`` are batch axes (vectorized Jacobians) and
    are kept: the result has shape ``g.shape[:lead] + shape``.
    """
    extra = g.ndim - lead - len(shape)
    if extra:
        g = g.sum(tuple(range(lead, lead + extra)))
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if stretched:
        g = g.sum(stretched, keepdims=True)
    return g


def broadcast_to(x, shape: tuple):
    """A read-only broadcast view of ``x``, like ``xp.broadcast_to``.

    For contiguous numpy arrays the view is built directly from x's buffer with
    zero strides on the stretched axes: numpy's own broadcast_to costs several
    microseconds of Python-level setup, and every reduction's backward calls this.
    """
    if type(x) is not numpy.ndarray or not x.flags.c_contiguous:
        return namespace_of(x).broadcast_to(x, shape)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {x.shape} to {shape}")
    strides = []
    for i, n in enumerate(shape):
        j = i - lead
        if j < 0:
            strides.append(0)
        elif x.shape[j] == n:
            strides.append(x.strides[j])
        elif x.shape[j] == 1:
            strides.append(0)
        else:
            raise ValueError(f"operands could not be broadcast together: {x.shape} to {shape}")
    view = numpy.ndarray(shape, x.dtype, buffer=x, strides=tuple(strides))
    view.flags.writeable = False
    return view


def repeated_along_leading(x, count: int):
    """The one array that ``x``'s first ``count`` axes repeat when each of them is broadcast (stride 0,
    as ``broadcast_to`` makes them) or of size 1, else None."""
    strides = getattr(x, "strides", None)
    if strides is None or not 0 <= count <= x.ndim:
        return None
    if any(stride and size != 1 for stride, size in zip(strides[:count], x.shape[:count])):
        return None
    return x[(0,) * count]


def broadcast_shapes(*shapes) -> tuple:
    return numpy.broadcast_shapes(*shapes)


# ---- in-place updates (optimizers) -----------------------------------------

_AXPY: dict = {}


def _blas_axpy():
    # scipy.linalg is imported on first use: it is slow to import and only optimizers need it.
    from scipy.linalg import blas

    thread_pools.rescan()  # scipy's own OpenBLAS, loaded just now, gets the engine's limit too
    _AXPY.update({numpy.dtype("float32"): blas.saxpy, numpy.dtype("float64"): blas.daxpy})
    return _AXPY


def axpy_(alpha: float, x, y) -> None:
    """``y += alpha * x`` in place, PyTorch's ``y.add_(x, alpha=alpha)``. For contiguous numpy float
    arrays this is BLAS ?axpy: one pass, no temporary. Whether an element is rounded once (a fused
    multiply-add) or twice is the kernel's choice, and OpenBLAS picks its kernel by CPU: on one
    x86 machine its SkylakeX kernel fused every element, its Haswell kernel all but a few, its
    Sandybridge and older kernels none. PyTorch fuses where its CPU capability has FMA. So an SGD
    step is within one ulp of ``|y| + |alpha x|`` of the exact value, and PyTorch's bit for bit
    only where both fuse."""
    table = _AXPY or _blas_axpy()
    blas = table.get(y.dtype) if type(y) is numpy.ndarray and type(x) is numpy.ndarray else None
    if blas is None or x.dtype != y.dtype or x.shape != y.shape or not (
        x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable
    ):
        y += alpha * x
        return
    flat = y.reshape(-1)
    result = blas(x.reshape(-1), flat, a=alpha)
    if result is not flat:  # f2py copied instead of updating in place
        flat[...] = result


# ---- random numbers --------------------------------------------------------


def new_generator(seed: int | None):
    """A numpy PCG64 bit generator; one per engine.Generator."""
    return numpy.random.Generator(numpy.random.PCG64(seed))


def seed_sequence_entropy() -> int:
    return int(numpy.random.SeedSequence().entropy % (2**63))
