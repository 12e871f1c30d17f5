"""How ``vmap`` runs table ops on batches: batched tensors and the one dispatch over the table.

A ``BatchedTensor`` is a Tensor whose array carries batch axes in front of
the shape the user's function sees: one axis per running ``vmap`` it is
batched over (its class names those vmaps' levels, in the order of its
axes). Its ``shape``, ``ndim``, ``numel`` and friends answer for one sample.

While a vmap runs, ``engine.autograd.function.apply`` hands every op to
``dispatch`` first. An op with a batched input runs *once* on the whole
batch, through the same ``apply`` on the physical arrays (so autograd
records it, and forward-mode tangents follow it), after this module has
lined up the inputs:

- the op's params are normalized against the inputs' per-sample shapes, so
  axes become negative and skip the batch axes (the same property the
  table's vjp and jvp rules rely on for leading batch axes);
- each batched input's batch axes are put in one order, and an input missing
  a level gets an axis of size 1 there;
- a ``broadcast`` op's batched inputs are padded with size-1 axes after their
  batch axes to the largest per-sample rank, so numpy's right-aligned
  broadcasting pairs per-sample axes with per-sample axes;
- an op with a ``batch=`` rule in its entry gets every tensor input with the
  batch axes (size 1 where it is not batched) and the rule runs it
  (``reshape`` prefixes the batch shape, ``matmul`` makes per-sample vectors
  matrices); any other op gets its inputs expanded to the full batch and runs
  as is; an entry declaring
  ``batch="loop"`` runs once per sample and the results are stacked, so an
  op that cannot batch is slow under vmap, never wrong.

Inside the physical run (and in the transforms' backward passes, see
``engine.func.transforms``) the dispatch is off and batched tensors show their
whole arrays: ``Physical()`` is that mode.
"""

from __future__ import annotations

import itertools
import threading

from engine import creation, ops
from engine.autograd import function
from engine.tensor import Size, Tensor

__all__ = ["BatchedTensor", "Physical", "active_levels", "any_batched", "batched_class", "is_batched", "levels_of",
           "per_sample"]


class _ThreadState(threading.local):
    def __init__(self):
        self.levels = []  # the running vmaps in this thread: [(level, size, randomness)], outermost first
        self.physical = 0  # > 0: batched tensors act as plain ones and the dispatch is off


_state = _ThreadState()
_running_lock = threading.Lock()
_running = [0]  # vmaps running in any thread; the dispatch is installed while there is one


class Physical:
    """Within: batched tensors show their whole arrays, and ops run on them unbatched."""

    __slots__ = ()

    def __enter__(self):
        _state.physical += 1

    def __exit__(self, *exc):
        _state.physical -= 1


class Logical:
    """Within (inside ``Physical``): the user's code again, seeing one sample."""

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved, _state.physical = _state.physical, 0

    def __exit__(self, *exc):
        _state.physical = self.saved


def active_levels() -> list:
    """``[(level, size, randomness)]`` of the vmaps running in this thread, outermost first."""
    return _state.levels


def push_level(size, randomness) -> int:
    level = len(_state.levels) + 1
    _state.levels.append((level, size, randomness))
    with _running_lock:
        _running[0] += 1
        function.vmap_hook = dispatch
        creation.vmap_random = random_batch
    return level


def pop_level():
    _state.levels.pop()
    with _running_lock:
        _running[0] -= 1
        if not _running[0]:
            function.vmap_hook = None
            creation.vmap_random = None


def randomness() -> str | None:
    """The innermost running vmap's ``randomness`` (None outside vmap)."""
    return _state.levels[-1][2] if _state.levels and not _state.physical else None


_RANDOM_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either use the 'same' or "
    "'different' randomness flags on vmap or perform the randomness operation out of vmap"
)


def random_batch():
    """``(batch_shape, mark)`` for a random draw in this thread (installed as
    ``engine.creation.vmap_random``): PyTorch's error under randomness='error'; under 'different'
    the running vmaps' batch shape (one draw per sample) and what marks the draw batched over
    them; ``((), None)`` under 'same' and outside vmap."""
    mode = randomness()
    if mode == "error":
        raise RuntimeError(_RANDOM_ERROR)
    if mode != "different":
        return (), None
    levels = tuple(level for level, _, _ in _state.levels)
    return tuple(size for _, size, _ in _state.levels), lambda t: as_batched(t, levels)


# ---- batched tensors -------------------------------------------------------------------


_ITEM = (
    "vmap: It looks like you're calling .item() on a Tensor. We don't support vmap over calling .item() on "
    "a Tensor, please try to rewrite what you're doing with other operations. If error is occurring somewhere "
    "inside PyTorch internals, please file a bug report."
)
_CONTROL_FLOW = (
    "vmap: It looks like you're attempting to use a Tensor in some data-dependent control flow. We don't "
    "support that yet, please file an issue at https://github.com/pytorch/pytorch/issues ."
)
_NO_STORAGE = "Cannot access data pointer of Tensor that doesn't have storage"
# vmap's refusals of a function whose samples cannot share one pass (a value read into Python,
# data-dependent control flow, a random draw under randomness='error'), PyTorch's messages: what a
# caller that falls back to a loop of calls matches (service/batch_vmap.py).
REFUSALS = (_ITEM, _CONTROL_FLOW, _NO_STORAGE, _RANDOM_ERROR)


class BatchedTensor(Tensor):
    """A Tensor batched over running vmaps (see the module docstring); ``_levels`` is set by
    ``batched_class`` on a subclass per tuple of levels, so re-batching a result is a class change."""

    __slots__ = ()
    _levels: tuple = ()

    def _batch_ndim(self) -> int:
        return 0 if _state.physical else len(self._levels)

    @property
    def shape(self):
        return Size(self._data.shape[self._batch_ndim():])

    def size(self, dim=None):
        shape = self._data.shape[self._batch_ndim():]
        return Size(shape) if dim is None else shape[dim]

    @property
    def ndim(self) -> int:
        return self._data.ndim - self._batch_ndim()

    def dim(self) -> int:
        return self._data.ndim - self._batch_ndim()

    def numel(self) -> int:
        n = 1
        for size in self._data.shape[self._batch_ndim():]:
            n *= size
        return n

    nelement = numel

    def __len__(self) -> int:
        shape = self._data.shape[self._batch_ndim():]
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def detach(self) -> Tensor:
        t = Tensor.detach(self)
        t.__class__ = type(self)
        return t

    def item(self):
        if _state.physical:
            return Tensor.item(self)
        raise RuntimeError(_ITEM)

    def __bool__(self):
        if _state.physical:
            return Tensor.__bool__(self)
        raise RuntimeError(_CONTROL_FLOW)

    def tolist(self):
        if _state.physical:
            return Tensor.tolist(self)
        raise RuntimeError(_NO_STORAGE)

    def numpy(self, *, force: bool = False):
        if _state.physical:
            return Tensor.numpy(self, force=force)
        raise RuntimeError(_NO_STORAGE)

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError(_NO_STORAGE)

    def __repr__(self) -> str:
        with Physical():
            value = Tensor.__repr__(self)
        return f"BatchedTensor(lvl={self._levels}, bdim=0, value=\n{value})"


_classes: dict = {}


def batched_class(levels: tuple) -> type:
    """The Tensor class batched over ``levels`` (in the order of its array's leading axes)."""
    if not levels:
        return Tensor
    cls = _classes.get(levels)
    if cls is None:
        cls = _classes[levels] = type("BatchedTensor", (BatchedTensor,), {"__slots__": (), "_levels": levels})
    return cls


def is_batched(value) -> bool:
    return isinstance(value, BatchedTensor)


def levels_of(value) -> tuple:
    return value._levels if isinstance(value, BatchedTensor) else ()


def batch_sizes(value) -> dict:
    """level -> size of a batched tensor's batch axes."""
    levels = levels_of(value)
    return dict(zip(levels, value._data.shape[: len(levels)]))


def as_batched(t, levels):
    """``t`` (a Tensor made here, not the user's) re-classed as batched over ``levels``."""
    t.__class__ = batched_class(levels)
    return t


def per_sample_shape(value) -> tuple:
    return tuple(value._data.shape[len(levels_of(value)):])


# ---- lining inputs up (physical mode) -------------------------------------------------


def _run(op, args, params):
    return function.apply(op, args, params)


def align(t, levels, sizes, rank=None, expand=False):
    """``t``'s array with batch axes for ``levels`` in that order (size 1 where ``t`` lacks a level,
    or the full size with ``expand``), then ``rank`` per-sample axes (size-1 axes padded in front).
    Run in physical mode; recorded, so gradients reach ``t``."""
    own = levels_of(t)
    shape = tuple(t._data.shape)
    per_sample = shape[len(own):]
    x = t
    ordered = tuple(level for level in levels if level in own)
    if ordered != own:
        dims = tuple(own.index(level) for level in ordered) + tuple(range(len(own), len(shape)))
        x = _run(ops.permute, (x,), {"dims": dims})
        shape = tuple(x._data.shape)
    present = dict(zip(ordered, shape))
    padding = (1,) * ((len(per_sample) if rank is None else rank) - len(per_sample))
    target = tuple(present.get(level, 1) for level in levels) + padding + per_sample
    if target != shape:
        x = _run(ops.reshape, (x,), {"shape": target})
    if expand:
        full = tuple(sizes[level] for level in levels) + padding + per_sample
        if full != target:
            x = _run(ops.expand, (x,), {"shape": full})
    return x


def to_levels(t, levels, sizes):
    """``t`` (any Tensor) as a batched tensor over exactly ``levels``, expanded to full size."""
    with Physical():
        x = align(t, levels, sizes, expand=True)
        if x is t:
            x = _run(ops.reshape, (t,), {"shape": tuple(t._data.shape)})  # a new tensor to re-class
    return as_batched(x, tuple(levels))


# ---- the dispatch -----------------------------------------------------------------------


def dispatch(op, args, params):
    """Run ``op`` batched when an input is a batched tensor; None to let ``apply`` run it as is."""
    if _state.physical:
        return None
    tensors = args[0] if op.variadic else args
    found = set()
    for value in tensors:
        if isinstance(value, BatchedTensor):
            found.update(value._levels)
    if not found:
        return None
    levels = tuple(sorted(found))
    with Physical():
        return _run_batched(op, args, params, levels)


def _shape_for_params(value):
    if isinstance(value, Tensor):
        return per_sample_shape(value)
    return getattr(value, "shape", ())


def _normalized(op, args, params):
    """The op's params completed and normalized against per-sample shapes (axes become negative)."""
    if not op.param_defaults:
        return params
    if len(params) != len(op.param_defaults):
        params = {**op.optional_params, **params}
    if op.normalize is not None:
        if op.variadic:
            params = op.normalize(params, tuple(_shape_for_params(t) for t in args[0]))
        else:
            params = op.normalize(params, *(_shape_for_params(a) for a in args))
    return params


def _sizes(tensors, levels):
    sizes = dict.fromkeys(levels, 1)
    for value in tensors:
        if not isinstance(value, BatchedTensor):
            continue
        for level, size in batch_sizes(value).items():
            sizes[level] = max(sizes[level], size)
    return sizes


def _run_batched(op, args, params, levels):
    tensors = args[0] if op.variadic else args
    sizes = _sizes(tensors, levels)
    rule = op.batch
    if rule == "loop":
        return _loop(op, args, params, levels, sizes)
    params = _normalized(op, args, params)
    if rule is None and op.broadcast:
        rank = max(len(per_sample_shape(t)) for t in tensors if isinstance(t, Tensor))
        lined = tuple(align(a, levels, sizes, rank) if isinstance(a, BatchedTensor) else a for a in args)
        return _rebatch(_run(op, lined, params), levels)
    if rule is not None:  # every tensor with the batch axes, of size 1 where it is not batched
        lined = tuple(align(a, levels, sizes) if isinstance(a, Tensor) else a for a in args)
        return _rebatch(rule(*lined, nbatch=len(levels), **params), levels)
    lined = [align(a, levels, sizes, expand=True) if isinstance(a, Tensor) else a for a in tensors]
    return _rebatch(_run(op, (lined,) if op.variadic else tuple(lined), params), levels)


def _rebatch(result, levels):
    if isinstance(result, tuple):
        return tuple(as_batched(r, levels) for r in result)
    return as_batched(result, levels)


def _loop(op, args, params, levels, sizes):
    """The op once per sample (each input indexed along its batch axes), the results stacked."""
    batch_shape = tuple(sizes[level] for level in levels)
    tensors = args[0] if op.variadic else args
    lined = [align(a, levels, sizes, expand=True) if isinstance(a, BatchedTensor) else a for a in tensors]
    outputs = []
    for index in itertools.product(*(range(n) for n in batch_shape)):
        sample = [_run(ops.getitem, (a,), {"index": index}) if isinstance(a, BatchedTensor) else a for a in lined]
        outputs.append(_run(op, (sample,) if op.variadic else tuple(sample), params))
    if isinstance(outputs[0], tuple):
        return tuple(_stacked(list(parts), batch_shape, levels) for parts in zip(*outputs))
    return _stacked(outputs, batch_shape, levels)


def _stacked(outputs, batch_shape, levels):
    stacked = _run(ops.stack, (outputs,), {"dim": 0})
    shaped = _run(ops.reshape, (stacked,), {"shape": batch_shape + tuple(outputs[0]._data.shape)})
    return as_batched(shaped, levels)


# ---- a composite function once per sample ----------------------------------------------


def any_batched(*values) -> bool:
    return any(isinstance(v, BatchedTensor) for v in values)


def per_sample(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` once per sample, on plain slices of the batched arguments, the results
    stacked and batched again: for the few functions outside the table that read a tensor's array
    themselves (``nll_loss`` indexes with its targets), so they are slow under vmap, never wrong."""
    levels = tuple(sorted({level for a in args for level in levels_of(a)}))
    sizes = _sizes(args, levels)
    batch_shape = tuple(sizes[level] for level in levels)
    with Physical():
        lined = [align(a, levels, sizes, expand=True) if isinstance(a, BatchedTensor) else a for a in args]
        outputs = []
        for index in itertools.product(*(range(n) for n in batch_shape)):
            sample = [_run(ops.getitem, (a,), {"index": index}) if isinstance(a, BatchedTensor) else a
                      for a in lined]
            outputs.append(fn(*sample, **kwargs))
        return _stacked(outputs, batch_shape, levels)
