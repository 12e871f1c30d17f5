"""Forward-mode AD: dual tensors driven by the table's jvp rules (PyTorch's ``torch.autograd.forward_ad``).

Inside ``with dual_level():`` a tensor made by ``make_dual(x, t)`` carries the
tangent ``t``; every op applied to it runs its forward as usual and then its
jvp rule, ``op.jvp([*tangents, out, *inputs], params)``, giving the result's
tangent. ``unpack_dual(y)`` returns ``(primal, tangent)``. A jvp therefore
costs one forward pass.

Where tangents live: ``Tensor._tangents`` maps a level's id to the tangent,
stored as an array (the fast path: rules run on arrays, nothing is recorded)
or, when the tangent is itself a Tensor that requires grad or the caller asks
for differentiable tangents, as a Tensor (rules run on Tensors, so the
tangent can be differentiated again; ``jvp(..., create_graph=True)``).

Batched tangents: a tangent may carry extra *leading* axes, one tangent per
row (``t.shape == batch + x.shape``); every rule tolerates them, so the
columns of a Jacobian are pushed through in one pass. Missing tangents of an
op's other inputs are zeros: for broadcasting ops zeros of the input's own
shape (cheap, and they broadcast against the batch), otherwise a zero-strided
view with the batch prefix. For broadcasting ops a batched tangent of a
lower-rank input is given the output's rank (``(B, 1, n)`` for ``(n,)``
against a ``(m, n)`` result) so the batch axis never lines up with a data
axis.

The tangent propagation is installed into ``engine.autograd.function`` only
while some level is open, so code that never enters a level pays nothing.
The current level is a ``ContextVar`` (two server requests never see each
other's level); as in PyTorch, levels do not nest.

Backward with ``create_graph=True`` runs the vjp rules on Tensors, so inside a
level it propagates tangents too: that is forward-over-reverse (Hessian
rows, ``hvp``; ``run_backward(..., record=False)`` does it without recording
the backward pass). Backward nodes keep their result's tangents
(``Node.out_tangents``) because rules that use ``out`` rebuild it as a Tensor.

In-place ops carry the tangent along (``engine.autograd.inplace``); writing
through a view updates the base's tangent too (other views of that base keep
the tangent they had, where PyTorch's would see the write).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from contextvars import ContextVar
from typing import NamedTuple

from engine import backend, ops
from engine.autograd import function, grad_mode
from engine.tensor import Tensor

__all__ = ["UnpackedDualTensor", "dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual"]

_numpy, _ndarray = backend.numpy, backend.ndarray
_ids = itertools.count(1)
_current: ContextVar = ContextVar("forward_ad_level", default=None)
_open_levels = 0
_lock = threading.Lock()


class _Level:
    """One open dual level: its id, and (weakly) the tensors given a tangent at it, to clear on exit."""

    __slots__ = ("given", "id", "tensors")

    def __init__(self):
        self.id = next(_ids)
        self.tensors = []
        # id(dual) -> the tangent Tensor make_dual was given, handed back by unpack_dual (PyTorch
        # returns the very tangent object when its layout matches; the level stores its array).
        self.given = {}

    def attach(self, tensor, tangent):
        if tensor._tangents is None:
            tensor._tangents = {self.id: tangent}
        else:
            tensor._tangents[self.id] = tangent
        self.tensors.append(weakref.ref(tensor))

    def clear(self):
        for ref in self.tensors:
            tensor = ref()
            if tensor is not None and tensor._tangents:
                tensor._tangents.pop(self.id, None)
        self.tensors = []
        self.given = {}


class UnpackedDualTensor(NamedTuple):
    """What ``unpack_dual`` returns: the primal and its tangent (None when there is none)."""

    primal: Tensor
    tangent: Tensor | None


# ---- levels ------------------------------------------------------------------


def enter_dual_level() -> int:
    """Open a forward-AD level and return its id (prefer ``with dual_level():``)."""
    global _open_levels
    if _current.get() is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    level = _Level()
    _current.set(level)
    with _lock:
        _open_levels += 1
        function.forward_ad_hook = _propagate
    return level.id


def exit_dual_level(*, level=None) -> None:
    """Close the current level; every tangent made at it is dropped."""
    global _open_levels
    current = _current.get()
    if current is None or (level is not None and level != current.id):
        raise RuntimeError(
            "Trying to exit a forward AD level that was not the last one that was created. This is not supported."
        )
    current.clear()
    _current.set(None)
    with _lock:
        _open_levels -= 1
        if _open_levels == 0:
            function.forward_ad_hook = None


class dual_level:  # noqa: N801 - PyTorch's name
    """Context manager (and decorator) for forward AD: ``with dual_level(): ...``."""

    def __enter__(self):
        return enter_dual_level()

    def __exit__(self, *exc):
        exit_dual_level()
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with dual_level():
                return fn(*args, **kwargs)

        return wrapped


def _level(level):
    current = _current.get()
    if current is None or (level is not None and level != current.id):
        return None
    return current


# ---- dual tensors ------------------------------------------------------------


def _alias(tensor):
    """A view of ``tensor`` that keeps its autograd history but carries no tangent."""
    if tensor._requires_grad and grad_mode.is_grad_enabled():
        token = _current.set(None)
        try:
            return function.apply(ops.reshape, (tensor,), {"shape": tuple(tensor._data.shape)})
        finally:
            _current.reset(token)
    return tensor.detach()


def make_dual(tensor, tangent, *, level=None):
    """A view of ``tensor`` whose tangent (forward gradient) at the current level is ``tangent``.

    ``tangent`` has ``tensor``'s shape, or that shape behind leading batch
    axes (a batch of tangents, pushed through together). It is cast to
    ``tensor``'s dtype.
    """
    current = _level(level)
    if current is None:
        raise RuntimeError(
            "Trying to create a dual Tensor for forward AD but no level exists, make sure to enter_dual_level() first."
        )
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError("make_dual expects Tensors for both the primal and the tangent")
    if not tensor.is_floating_point():
        raise ValueError(f"Expected primal to be floating point or complex, but got: {tensor.dtype}")
    if not tangent.is_floating_point():
        raise ValueError(f"Expected tangent to be floating point or complex, but got: {tangent.dtype}")
    shape = tuple(tensor._data.shape)
    tail = tuple(tangent._data.shape[tangent.ndim - len(shape):]) if tangent.ndim >= len(shape) else None
    if tail != shape:
        raise RuntimeError(
            "Trying to set a forward gradient that has a different size than that of the original Tensor, "
            f"this is not supported. Tensor is of size {list(shape)} while the given forward gradient is of "
            f"size {list(tangent.shape)}."
        )
    dual = _alias(tensor)
    if tangent._requires_grad:
        value = tangent if tangent.dtype is tensor.dtype else tangent.to(tensor.dtype)
    else:
        value = tangent._data.astype(tensor._data.dtype, copy=False)
        if value is tangent._data:
            current.given[id(dual)] = tangent
    current.attach(dual, value)
    return dual


def unpack_dual(tensor, *, level=None) -> UnpackedDualTensor:
    """``(primal, tangent)`` of ``tensor`` at the current level; tangent is None for a plain tensor."""
    current = _level(level)
    tangents = tensor._tangents
    if current is None or not tangents or tangents.get(current.id) is None:
        return UnpackedDualTensor(tensor, None)
    value = tangents[current.id]
    if not isinstance(value, Tensor):
        given = current.given.get(id(tensor))
        value = given if given is not None and given._data is value else Tensor._make(value)
    return UnpackedDualTensor(_alias(tensor), value)


def _set_tangent(tensor, value) -> None:
    """Give ``tensor`` (an array or Tensor) tangent at the current level, in place (used by functional)."""
    _current.get().attach(tensor, value)


def _tangent(tensor):
    """The raw tangent (array or Tensor) of ``tensor`` at the current level, or None."""
    current = _current.get()
    tangents = tensor._tangents
    if current is None or not tangents:
        return None
    return tangents.get(current.id)


# ---- propagation (installed as engine.autograd.function.forward_ad_hook) -------


def _propagate(op, inputs, params, result):
    """Compute ``result``'s tangent from its inputs' tangents with ``op``'s jvp rule."""
    current = _current.get()
    if current is None or op.nondiff:
        return
    key = current.id
    tangents = []
    arrays = []
    found = missing = differentiable = False
    batch = ()
    for value in inputs:
        if isinstance(value, Tensor):
            data = value._data
            tangent = value._tangents.get(key) if value._tangents else None
            if tangent is None:
                missing = True
            else:
                found = True
                if isinstance(tangent, Tensor):
                    differentiable = True
                if tangent.ndim > data.ndim + len(batch):
                    batch = tuple(tangent.shape[: tangent.ndim - data.ndim])
            arrays.append(data)
        elif backend.is_array(value) and value.ndim:
            tangent = None  # a constant array operand: zeros of its shape
            missing = True
            arrays.append(value)
        else:
            tangent = 0.0  # a Python number is a constant
            arrays.append(value)
        tangents.append(tangent)
    if not found:
        return
    out = result._data
    if out.dtype.kind not in "fc":
        return
    if op.jvp is None:
        raise NotImplementedError(f"jvp of {op.name} not defined")
    if missing or batch:
        tangents = _pad(op, arrays, tangents, batch, out)
    shape = batch + out.shape
    if differentiable:
        token = _current.set(None)  # the rule's own ops must not propagate tangents again
        try:
            values = [tangents, result, list(inputs)] if op.variadic else [*tangents, result, *inputs]
            tangent = op.jvp(values, params)
        finally:
            _current.reset(token)
        if tuple(tangent.shape) != shape:
            tangent = ops.expand(tangent, shape=shape)
        if tangent.dtype is not result.dtype:
            tangent = tangent.to(result.dtype)
    else:
        tangent = op.jvp([tangents, out, arrays] if op.variadic else [*tangents, out, *arrays], params)
        if tangent.shape != shape or tangent.dtype is not out.dtype:
            xp = backend.namespace_of(out)
            tangent = xp.broadcast_to(xp.asarray(tangent, dtype=out.dtype), shape)
    current.attach(result, tangent)
    node = result.grad_fn
    if node is not None:
        node.out_tangents = result._tangents


def _pad(op, arrays, tangents, batch, out):
    """Fill in zeros for missing tangents and line batched ones up with the output (see module doc)."""
    xp = _numpy if type(out) is _ndarray else backend.namespace_of(out)
    padded = []
    for data, tangent in zip(arrays, tangents):
        if type(tangent) is float:  # a constant operand (not a Tensor): its tangent is 0.0 already
            padded.append(tangent)
            continue
        shape = data.shape
        if tangent is None:
            if op.broadcast or not batch:
                tangent = xp.zeros(shape, dtype=out.dtype)
            else:
                tangent = xp.broadcast_to(xp.zeros((), dtype=out.dtype), batch + shape)
        elif batch:
            lead = tangent.ndim - len(shape)
            if lead < len(batch):
                if not op.broadcast:
                    tangent = ops.expand(tangent, shape=batch + shape)
            elif op.broadcast and len(shape) < out.ndim:
                tangent = ops.reshape(tangent, shape=batch + (1,) * (out.ndim - len(shape)) + shape)
        padded.append(tangent)
    return padded
