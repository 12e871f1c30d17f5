"""Running a table op on Tensors, and recording it when autograd needs to.

``apply`` is the single path from a Tensor method (or ``engine.<fn>``) to an
op's forward: it unwraps tensors, checks devices, normalizes axis parameters,
runs the forward on arrays, fixes the result dtype, propagates forward-mode
tangents, and when grad mode is on and an input requires grad, builds the
backward node with exactly what the op's vjp rules asked to save.
"""

from __future__ import annotations

from engine import backend
from engine import op as op_module
from engine.autograd import grad_mode
from engine.autograd.graph import accumulator, node_class
from engine.tensor import Tensor

_grad_enabled = grad_mode._grad_enabled.get
_F64 = backend.numpy.dtype("float64")
_SCALARS = (int, float, bool)

# Observers of every op (the profiler, the service's deadline). Checked once per
# op; empty in normal use, so that check is the whole cost.
op_observers: list = []
# Forward-mode AD (engine.autograd.forward_ad) installs its tangent propagation here.
forward_ad_hook = None


def _unwrap(value, arrays, tensors):
    if isinstance(value, Tensor):
        tensors.append(value)
        arrays.append(value._data)
        return
    if isinstance(value, _SCALARS) or value is None:
        arrays.append(value)
        return
    if backend.is_array(value) or hasattr(value, "dtype"):  # numpy scalars act like Python scalars
        arrays.append(value.item() if getattr(value, "ndim", 1) == 0 else value)
        return
    raise TypeError(
        f"expected a Tensor or a number as an operand, got {type(value).__name__}; "
        "wrap data in engine.tensor(...) first"
    )


def _check_devices(tensors, op):
    first = tensors[0]._data
    kind = type(first)
    for t in tensors[1:]:
        if type(t._data) is not kind:
            a, b = backend.device_of(first), backend.device_of(t._data)
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, "
                f"{a} and {b}! (when checking arguments for {op.name})"
            )


def apply(op, args, params):
    """Run ``op`` on ``args`` (Tensors and numbers) with keyword ``params``."""
    arrays = []
    tensors = []
    if op.variadic:
        parts = []
        for value in args[0]:
            _unwrap(value, parts, tensors)
        arrays.append(parts)
        for value in args[1:]:
            _unwrap(value, arrays, tensors)
        inputs = tuple(args[0])
    else:
        for value in args:
            _unwrap(value, arrays, tensors)
        inputs = args
    if not tensors:
        raise TypeError(f"{op.name} expects at least one Tensor operand")
    if backend.cupy is not None and len(tensors) > 1:
        _check_devices(tensors, op)
    if op.normalize is not None:
        params = op.normalize(params, *(getattr(a, "shape", ()) for a in arrays))

    if op_observers:
        for observer in op_observers:
            observer.before(op, tensors, params)
    xp = backend.namespace_of(tensors[0]._data)
    out = op.forward(xp, *arrays, **params)
    extras = ()
    if op.extra_outputs:
        out, *extras = out
    if type(out) is not backend.ndarray:
        out = xp.asarray(out)
    if out.dtype is _F64 and not any(t._data.dtype is _F64 for t in tensors):
        # PyTorch promotes int tensors and Python floats to the default dtype, not float64.
        out = out.astype(backend.default_dtype.np)

    result = Tensor._make(out)
    requires = False
    for t in tensors:
        if t._requires_grad:
            requires = True
            break
    if op.view:
        base = tensors[0]
        result._version_counter = base._version_counter
        result._base = base if base._base is None else base._base
    if requires and not op.nondiff and _grad_enabled():
        result._requires_grad = True
        result.grad_fn = _record(op, inputs, params, out, result)
    if forward_ad_hook is not None:
        forward_ad_hook(op, inputs, params, result)
    if op_observers:
        for observer in op_observers:
            observer.after(op, result)
    if extras:
        return (result, *(Tensor._make(xp.asarray(e)) for e in extras))
    return result


def _record(op, inputs, params, out, result):
    next_functions = []
    for value in inputs:
        if isinstance(value, Tensor):
            if value.grad_fn is not None:
                next_functions.append((value.grad_fn, 0))
            elif value._requires_grad:
                next_functions.append((accumulator(value), 0))
            else:
                next_functions.append((None, 0))
        else:
            next_functions.append((None, 0))
    saved = [None] * (len(inputs) + 1)
    checks = []
    if op.saves_out:
        saved[0] = out
        checks.append((result._version_counter, result._version_counter[0], -1))
    if op.variadic:
        if op.saved_inputs:
            saved[1] = inputs
    else:
        for i in op.saved_inputs:
            value = inputs[i]
            saved[i + 1] = value
            if isinstance(value, Tensor):
                checks.append((value._version_counter, value._version_counter[0], i))
    shapes = tuple(getattr(v, "shape", ()) for v in inputs)
    cls = node_class(op.grad_fn_name(params, shapes))
    return cls(op, params, tuple(next_functions), saved, tuple(checks), shapes, out.shape, out.dtype)


op_module.tensor_apply = apply
op_module.tensor_type = Tensor
__all__ = ["accumulator", "apply"]
