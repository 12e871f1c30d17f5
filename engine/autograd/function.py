"""Running a table op on Tensors, and recording it when autograd needs to.

``apply`` is the single path from a Tensor method (or ``engine.<fn>``) to an
op's forward. It reads as its phases, each a function below it, in order:
unwrap the tensors; place the op when they are device arrays (the decision is
``backend.op_placement``'s); complete and normalize the params; run the
forward on arrays with PyTorch's result dtype; wrap the result (linking a view
to its base); when grad mode is on and an input requires grad, record the
backward node with exactly what the op's vjp rules asked to save; propagate
forward-mode tangents.

apply runs for every op, so the test whether a phase has anything to do stays
in apply (no params, host arrays only, not a view, nothing to record, no dual
level, no observers), and the common case makes no call it does not need: so
split, apply costs what the same code written inline did (measured).
"""

from __future__ import annotations

from engine import backend, ops
from engine.autograd import grad_mode, graph
from engine.autograd.graph import accumulator, node_class
from engine.tensor import Tensor

_grad_enabled = grad_mode._grad_enabled.get
_F64 = backend.numpy.dtype("float64")
_F16 = backend.numpy.dtype("float16")
_SCALARS = (int, float, bool)

# Observers of every op (the profiler, the service's deadline). Checked once per
# op; empty in normal use, so that check is the whole cost.
op_observers: list = []
# Forward-mode AD (engine.autograd.forward_ad) sets its tangent propagation here while a
# dual level is open.
forward_ad_hook = None
# engine.func's vmap sets its dispatch here while a vmap runs: it runs an op with a batched input
# on the whole batch (returning the result), or returns None for apply to run the op as is.
vmap_hook = None
# Whether some engine.autograd.graph.saved_tensors_hooks block is open (in any thread): only then
# does a recorded node's saved tensors go through the hooks. Set by that block.
saved_tensors_hooks_active = False
# engine.compile's tracer (engine.compiler.tracer) sets its recorder here while a function is
# traced: ``trace_hook(op, inputs, arrays, params, result)`` after every op's forward.
trace_hook = None
# engine.autograd.inplace.refresh_view, bound by engine.wiring.connect() (inplace imports
# this module): a view whose base changed in place reads itself again before it is recorded.
_refresh_view = None

_NO_EDGE = (None, 0)
_ndarray = backend.ndarray
_numpy = backend.numpy
_make_tensor = Tensor._make


def _operand(value):
    """A non-Tensor, non-number operand as the forward sees it."""
    if value is None:
        return value
    if backend.is_array(value) or hasattr(value, "dtype"):  # numpy scalars act like Python scalars
        return value.item() if getattr(value, "ndim", 1) == 0 else value
    raise TypeError(
        f"expected a Tensor or a number as an operand, got {type(value).__name__}; "
        "wrap data in engine.tensor(...) first"
    )


def apply(op, args, params):
    """Run ``op`` on ``args`` (Tensors and numbers) with keyword ``params``; a Tensor (a tuple
    of Tensors for an op with extra outputs)."""
    if vmap_hook is not None:
        batched = vmap_hook(op, args, params)
        if batched is not None:
            return batched
    inputs, arrays, shapes, first, requires, xp = _unwrap(op, args)
    if xp is None:  # device arrays, or a mix of devices
        placed = _run_placed(op, args, params, inputs)
        if placed is not None:
            return placed
        xp = backend.namespace_of(first._data)
    if op.param_defaults:
        params = _complete_params(op, params, shapes)
    if op_observers:
        for observer in op_observers:
            observer.before(op, inputs, params)
    out = _forward(op, xp, arrays, params, first._data)
    if op.extra_outputs:
        out, *extras = out
    result = _make_tensor(out)
    if op.view and backend.aliases(out, first._data):  # a reshape that had to copy is no view
        _link_view(result, first, op, params)
    if requires and not op.nondiff and out.dtype.kind == "f" and _grad_enabled():
        result._requires_grad = True
        result.grad_fn = _record(op, inputs, params, out, result, shapes)
    if forward_ad_hook is not None:
        forward_ad_hook(op, inputs, params, result)
    if trace_hook is not None:
        trace_hook(op, inputs, arrays, params, result)
    if op_observers:
        for observer in op_observers:
            observer.after(op, result)
    if op.extra_outputs:
        return (result, *(_make_tensor(xp.asarray(e)) for e in extras))
    return result


def _unwrap(op, args):
    """``(inputs, arrays, shapes, first, requires, xp)``: the op's inputs (a variadic op's list of
    tensors), what the forward receives, their shapes, the first Tensor, whether any input
    requires grad, and numpy when every tensor is a host array (None: the device rules decide)."""
    if op.variadic:
        return _unwrap_variadic(op, args)
    if len(args) == 1 and isinstance(args[0], Tensor):  # one tensor (x.sin(), x.sum()): no loop
        first = args[0]
        data = first._data
        return args, [data], [data.shape], first, first._requires_grad, _numpy if type(data) is _ndarray else None
    arrays = []
    shapes = []
    first = None
    requires = False
    xp = _numpy
    for value in args:
        if isinstance(value, Tensor):
            data = value._data
            arrays.append(data)
            shapes.append(data.shape)
            if first is None:
                first = value
            if type(data) is not _ndarray:
                xp = None
            if value._requires_grad:
                requires = True
        elif isinstance(value, _SCALARS):
            arrays.append(value)
            shapes.append(())
        else:
            value = _operand(value)
            arrays.append(value)
            shapes.append(getattr(value, "shape", ()))
    if first is None:
        raise TypeError(f"{op.name} expects at least one Tensor operand")
    return args, arrays, shapes, first, requires, xp


def _unwrap_variadic(op, args):
    """``_unwrap`` for an op on a list of tensors (cat, stack): the list is one argument."""
    tensors = tuple(args[0])
    if not tensors:
        raise RuntimeError(f"{op.name} expects a non-empty list of Tensors")
    parts = []
    requires = False
    xp = _numpy
    for value in tensors:
        if not isinstance(value, Tensor):
            raise TypeError(f"{op.name} expects a list of Tensors, got {type(value).__name__}")
        parts.append(value._data)
        requires = requires or value._requires_grad
        if type(value._data) is not _ndarray:
            xp = None
    return tensors, [parts], [tuple(p.shape for p in parts)], tensors[0], requires, xp


def _run_placed(op, args, params, inputs):
    """Place an op on device arrays (``backend.op_placement``): None when it runs here, on the
    current device; else its result, run where it belongs. A 0-d CPU tensor joining a CUDA op
    is moved by the differentiable ``to_device`` op, so its gradient comes back to the CPU."""
    arrays = [t._data for t in inputs if isinstance(t, Tensor)]
    scalars_to, scope = backend.op_placement(arrays, op.name, op.broadcast)
    if scalars_to is not None:
        return apply(op, _moved_scalars(args, scalars_to), params)
    if scope is not None:  # run (and allocate) on the tensors' device, e.g. cuda:1
        with scope:
            return apply(op, args, params)
    return None


def _moved_scalars(args, dev):
    """``args`` with each 0-d CPU tensor copied to ``dev`` by the ``to_device`` op."""
    return tuple(
        apply(ops.to_device, (value,), {"device": str(dev)})
        if isinstance(value, Tensor) and type(value._data) is _ndarray and value._data.ndim == 0 else value
        for value in args
    )


def _complete_params(op, params, shapes):
    """The op's params with the defaults a caller left out (the rules name every param), and its
    axis params normalized against the inputs' shapes."""
    if len(params) != len(op.param_defaults):
        params = {**op.optional_params, **params}
    if op.normalize is not None:
        params = op.normalize(params, *shapes)
    return params


def _forward(op, xp, arrays, params, data):
    """The op's forward on arrays, with PyTorch's result dtype (``data`` is the first Tensor's
    array). An op with extra outputs (indices) gives ``(out, *extras)``."""
    out = op.forward(xp, *arrays, **params)
    extras = None
    if op.extra_outputs:
        out, *extras = out
    if type(out) is not _ndarray and not backend.is_array(out):  # a device array stays (to_device's output)
        out = xp.asarray(out)
    if out.dtype is not data.dtype or not data.ndim:
        out = _promote_like_pytorch(op, out, data, arrays, params)
    return out if extras is None else (out, *extras)


def _link_view(result, first, op, params):
    """Make ``result`` a view of ``first``'s base: it shares the base's version counter and
    remembers the view ops from the base, and the version the base had (how an in-place op
    writes through it, and when the base has changed since: see ``autograd.inplace``)."""
    result._version_counter = first._version_counter
    if first._base is None:
        result._base = first
        result._view_origin = (((op, params),), first._version_counter[0])
    else:
        result._base = first._base
        chain, version = first._view_origin
        result._view_origin = ((*chain, (op, params)), version)


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _zero_dim_promotion(out, operands):
    """PyTorch's promotion rule that numpy lacks: a 0-d tensor does not widen dimensioned tensors
    of the same or a higher category (float32 tensor + 0-d float64 tensor is float32; int32
    tensor + 0-d int64 tensor is int32). Python scalars are weak in numpy already."""
    arrays = [a for a in operands if hasattr(a, "ndim")]
    if out.dtype != _numpy.result_type(*arrays):
        return out  # the op chose its own result dtype (comparisons, indices)
    dimensioned = [a.dtype for a in arrays if a.ndim]
    zero_dim = [a.dtype for a in arrays if not a.ndim]
    if not dimensioned or not zero_dim:
        return out
    expected = _numpy.result_type(*dimensioned)
    widest_zero_dim = _numpy.result_type(*zero_dim)
    if _CATEGORY[widest_zero_dim.kind] > _CATEGORY[expected.kind]:
        expected = widest_zero_dim
    return out if out.dtype == expected else out.astype(expected)


def _promote_like_pytorch(op, out, data, arrays, params):
    """Where numpy's result dtype differs from PyTorch's (only possible when the result's dtype is
    not the first input's, or that input is 0-d)."""
    operands = arrays[0] if op.variadic else arrays  # a variadic op's inputs are one list
    if "dtype" in params:  # to_dtype and the like choose the result dtype themselves
        return out
    if len(operands) > 1:
        out = _zero_dim_promotion(out, operands)
    if out.dtype is _F64 and not any(a.dtype is _F64 for a in operands if hasattr(a, "dtype")):
        # PyTorch promotes int tensors and Python floats to the default dtype, not float64.
        out = out.astype(backend.default_dtype.np)
    elif out.dtype is _F16 and not any(a.dtype is _F16 for a in operands if hasattr(a, "dtype")):
        out = out.astype(backend.default_dtype.np)  # numpy's sin(bool array) is float16; PyTorch's float32
    return out


def _record(op, inputs, params, out, result, shapes):
    """The backward node for one op: edges to the inputs' nodes, and what the vjp rules need."""
    next_functions = []
    if op.saves_out:
        saved = [out]
        counter = result._version_counter  # a view's is its base's: not necessarily at 0
        checks = [(counter, counter[0], -1)]
    else:
        saved = [None]
        checks = []
    variadic = op.variadic
    keep = op.keeps_input
    for i, value in enumerate(inputs):
        if isinstance(value, Tensor):
            origin = value._view_origin
            if origin is not None and origin[1] != value._version_counter[0]:
                _refresh_view(value)  # its base changed in place since: read it again from there
            grad_fn = value.grad_fn
            if grad_fn is not None:
                next_functions.append((grad_fn, value._output_nr))
            elif value._requires_grad:
                node = value._accumulator
                next_functions.append((node if node is not None else accumulator(value), 0))
            else:
                next_functions.append(_NO_EDGE)
            if not variadic and keep[i]:
                saved.append(value)
                counter = value._version_counter
                checks.append((counter, counter[0], i))
                continue
        else:
            next_functions.append(_NO_EDGE)
        if not variadic:
            saved.append(value if keep[i] else None)
    if variadic:
        saved.append(inputs if op.saved_inputs else None)
    cls = op.node_cls
    if cls is None:
        cls = node_class(op.grad_fn_name(params, shapes))
        if not callable(op.grad_fn):
            op.node_cls = cls
    node = cls(op, params, tuple(next_functions), saved, checks, shapes, out.shape, out.dtype)
    if saved_tensors_hooks_active:
        graph.pack_saved(node, result)
    return node


def __getattr__(name):
    # PyTorch keeps its custom Functions in torch.autograd.function: so does the engine, loaded
    # on first use (engine.autograd.custom_function imports this module).
    if name in ("Function", "FunctionCtx", "BackwardCFunction", "InplaceFunction", "NestedIOFunction",
                "once_differentiable"):
        from engine.autograd import custom_function

        return getattr(custom_function, name)
    raise AttributeError(f"module 'engine.autograd.function' has no attribute {name!r}")


__all__ = ["accumulator", "apply"]
