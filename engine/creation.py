"""Creating tensors: from data, filled, ranges, random; and the seeded generators.

Random numbers come from ``engine.Generator`` objects (numpy's PCG64 on the
CPU); ``manual_seed`` reseeds the default one, so a seeded program is
reproducible run after run (the values differ from PyTorch's own stream).
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers

from engine import backend
from engine.tensor import Tensor

# The module (``engine.tensor`` is also the creation function, once engine is imported).
tensor_module = importlib.import_module("engine.tensor")


class Generator:
    """A seeded source of random numbers, like ``torch.Generator``."""

    def __init__(self, device="cpu"):
        self.device = backend.device(device)
        self._seed = backend.seed_sequence_entropy()
        self._rng = backend.new_generator(self._seed)

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self._rng = backend.new_generator(self._seed)
        return self

    def seed(self) -> int:
        self.manual_seed(backend.seed_sequence_entropy())
        return self._seed

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self):
        return Tensor(list(self._rng.bit_generator.state["state"].values()), dtype="int64")


default_generator = Generator()


def set_default_device(device) -> None:
    """Where creation functions put tensors when no ``device=`` is given (None: the CPU)."""
    backend.set_default_device(device)


def get_default_device():
    return backend.get_default_device()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (and each device's), as ``torch.manual_seed``."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def _infer_dtype(data):
    """PyTorch's inference: bools -> bool, ints -> int64, anything with a float -> default float."""
    kinds = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Tensor):
            kinds.add(item._data.dtype.kind)
        elif isinstance(item, bool):
            kinds.add("b")
        elif isinstance(item, numbers.Integral):
            kinds.add("i")
        else:
            kinds.add("f")
    if kinds <= {"b"} and kinds:
        return backend.bool_
    if kinds <= {"i", "b", "u"} and kinds:
        return backend.int64
    return backend.default_dtype


def to_array(data, dtype=None, device=None):
    """An array on ``device`` from numbers, nested lists, arrays or Tensors."""
    dev, xp, scope = backend.placement(device)
    with scope:  # cupy allocates on the current device
        return _placed_array(data, dtype, dev, xp)


def _placed_array(data, dtype, dev, xp):
    if isinstance(data, Tensor):
        if tensor_module.value_hook is not None:  # engine.compile: the values leave the traced graph
            tensor_module.value_hook(data, "copy")
        array = data._data
        target = backend.dtype(dtype).np if dtype is not None else array.dtype
        return backend.to_device(array, dev).astype(target, copy=True)
    if backend.is_array(data) or isinstance(data, backend.numpy.generic):  # numpy scalars keep their dtype
        target = backend.dtype(dtype).np if dtype is not None else _array_dtype(data)
        return xp.array(backend.to_device(data, dev), dtype=target, copy=True)
    target = backend.dtype(dtype) if dtype is not None else _infer_dtype(data)
    if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in data):
        data = [d.tolist() if isinstance(d, Tensor) else d for d in data]
    try:
        return xp.array(data, dtype=target.np)
    except (ValueError, TypeError) as error:
        raise ValueError(f"could not make a tensor from {type(data).__name__}: {error}") from None
    except OverflowError:  # a Python int wider than int64
        raise RuntimeError(f"Overflow when unpacking long: a value does not fit {target}") from None


def _array_dtype(array):
    """numpy's float64 stays float64 (like torch.from_numpy); other kinds map to ours."""
    kind = array.dtype.kind
    if kind == "f":
        known = (backend.float16.np, backend.float32.np, backend.float64.np)
        return array.dtype if array.dtype in known else backend.float64.np
    if kind == "b":
        return backend.bool_.np
    if kind in "iu":
        return array.dtype if array.dtype == backend.int32.np else backend.int64.np
    raise TypeError(f"can't make a tensor of numpy dtype {array.dtype}")


def _finish(array, requires_grad):
    t = Tensor._make(array)
    if requires_grad:
        t.requires_grad = True
    return t


def tensor(data, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _finish(to_array(data, dtype, device), requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array) -> Tensor:
    return Tensor._make(array)


def _filled(fill, shape, dtype, device, requires_grad):
    dt = backend.dtype(dtype) if dtype is not None else backend.default_dtype
    _, xp, scope = backend.placement(device)
    with scope:
        return _finish(xp.full(_shape(shape), fill, dtype=dt.np), requires_grad)


def _shape(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(n) for n in shape)


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(1, shape, dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, shape, dtype, device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if dtype is None:
        dtype = _infer_dtype(fill_value)
    return _filled(fill_value, (size,), dtype, device, requires_grad)


def _like(t, dtype, device):
    return (dtype if dtype is not None else t.dtype, device if device is not None else t.device)


def zeros_like(t, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(tuple(t.shape), dtype=_like(t, dtype, device)[0], device=_like(t, dtype, device)[1],
                 requires_grad=requires_grad)


def ones_like(t, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(tuple(t.shape), dtype=_like(t, dtype, device)[0], device=_like(t, dtype, device)[1],
                requires_grad=requires_grad)


def empty_like(t, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros_like(t, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(t, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(t, dtype, device)
    return full(tuple(t.shape), fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt = backend.dtype(dtype) if dtype is not None else backend.default_dtype
    _, xp, scope = backend.placement(device)
    with scope:
        return _finish(xp.eye(int(n), int(n if m is None else m), dtype=dt.np), requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = _infer_dtype([start, end, step])
    dt = backend.dtype(dtype)
    if step == 0:
        raise RuntimeError("step must be nonzero")
    count = max(math.ceil((end - start) / step), 0)
    _, xp, scope = backend.placement(device)
    with scope:
        values = start + step * xp.arange(count, dtype=backend.float64.np if dt.is_floating_point else backend.int64.np)
        return _finish(values.astype(dt.np), requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """PyTorch's algorithm, in the output dtype: the first half steps up from ``start``,
    the second half steps down from ``end``, so both ends are exact."""
    dt = backend.dtype(dtype) if dtype is not None else backend.default_dtype
    _, xp, scope = backend.placement(device)
    with scope:
        return _linspace(start, end, int(steps), dt, xp, requires_grad)


def _linspace(start, end, steps, dt, xp, requires_grad):
    if steps == 1:
        return _finish(xp.full((1,), start, dtype=dt.np), requires_grad)
    kind = dt.np.type
    start_, end_ = kind(start), kind(end)
    step = (end_ - start_) / kind(steps - 1)
    # PyTorch's kernel rounds start + step * i once where its CPU capability fuses multiply-adds
    # (AVX2, AVX-512); for dtypes narrower than float64, computing in float64 and rounding once
    # gives its values (tested bit for bit). Its kernel without FMA (ATEN_CPU_CAPABILITY=default)
    # rounds twice: within an ulp of max(|start|, |end|).
    wide = backend.float64.np.type if dt.np.itemsize < 8 else kind
    index = xp.arange(steps).astype(wide)
    halfway = steps // 2
    values = xp.where(index < halfway, wide(start_) + wide(step) * index,
                      wide(end_) - wide(step) * (wide(steps - 1) - index))
    return _finish(values.astype(dt.np), requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt = backend.dtype(dtype) if dtype is not None else backend.default_dtype
    _, xp, scope = backend.placement(device)
    with scope:
        return _finish((base ** xp.linspace(float(start), float(end), int(steps))).astype(dt.np), requires_grad)


# engine.func's vmap sets this while a vmap runs (``batching.random_batch``): it raises PyTorch's
# error under randomness='error', and under 'different' gives the batch shape to draw over and
# how to mark the draw as batched; ``((), None)`` otherwise.
vmap_random = None
# engine.compile's tracer sets this while a function is traced: ``random_hook(sample, draw)``
# with what draws again (``draw()``), so a replay draws fresh numbers instead of freezing them.
random_hook = None


def rand_array(kind, shape, dtype, device, generator=None, **params):
    """Draw from the generator on the CPU and move the sample to ``device``."""
    if vmap_random is not None:
        vmap_random()  # PyTorch's error for a random op under vmap(randomness='error')
    sample = _draw(kind, shape, dtype, device, generator, params)
    if random_hook is not None:
        random_hook(sample, functools.partial(_draw, kind, shape, dtype, device, generator, params))
    return sample


def _draw(kind, shape, dtype, device, generator, params):
    rng = (generator or default_generator)._rng
    dt = backend.dtype(dtype) if dtype is not None else backend.default_dtype
    if kind == "uniform":
        sample = rng.uniform(params.get("low", 0.0), params.get("high", 1.0), size=shape)
    elif kind == "normal":
        sample = rng.normal(params.get("loc", 0.0), params.get("scale", 1.0), size=shape)
    elif kind == "integers":
        sample = rng.integers(params["low"], params["high"], size=shape)
    elif kind == "permutation":
        sample = rng.permutation(shape[0])
    else:
        raise ValueError(f"unknown distribution {kind}")
    return backend.to_device(backend.numpy.asarray(sample).astype(dt.np), backend.device(device))


def drawn(kind, shape, dtype, device, generator=None, **params) -> Tensor:
    """A random Tensor of ``shape``: under ``vmap(randomness='different')`` one draw per sample (a
    batched tensor), under 'same' one draw for the whole batch."""
    batch_shape, mark = vmap_random() if vmap_random is not None else ((), None)
    t = Tensor._make(rand_array(kind, tuple(batch_shape) + tuple(shape), dtype, device, generator, **params))
    return mark(t) if mark is not None else t


def rand(*shape, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    t = drawn("uniform", _shape(shape), dtype, device, generator)
    return t.requires_grad_() if requires_grad else t


def randn(*shape, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    t = drawn("normal", _shape(shape), dtype, device, generator)
    return t.requires_grad_() if requires_grad else t


def randint(low, high=None, size=(), *, generator=None, dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    return drawn("integers", tuple(size), dtype or backend.int64, device, generator, low=low, high=high)


def randperm(n, *, generator=None, dtype=None, device=None) -> Tensor:
    return Tensor._make(rand_array("permutation", (int(n),), dtype or backend.int64, device, generator))


def rand_like(t, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(t, dtype, device)
    return rand(tuple(t.shape), dtype=dt, device=dev, requires_grad=requires_grad)


def randn_like(t, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(t, dtype, device)
    return randn(tuple(t.shape), dtype=dt, device=dev, requires_grad=requires_grad)
