"""Higher-level autograd: jacobian, hessian, vjp, jvp, hvp, vhp (``torch.autograd.functional``).

Signatures, result nesting and error messages follow PyTorch: a tuple of
inputs gives a tuple of results, several inputs and outputs give a tuple of
tuples, ``v`` may be omitted for single-element functions, ``strict=True``
raises (naming the input) where a result would be identically zero, and
``create_graph=True`` returns results that can be differentiated again.

What differs is how the results are computed:

- ``jvp`` is real forward mode (``engine.autograd.forward_ad``): one forward
  pass with dual tensors, not PyTorch's double-vjp trick.
- ``jacobian`` is vectorized (``vectorize=True`` by default): all rows come
  from one batched backward (the identity as a batch of cotangents,
  ``is_grads_batched``) or all columns from one batched forward pass
  (identity tangents). ``chunk_size`` bounds the batch; ``strategy="auto"``
  picks forward mode when the inputs have fewer elements than the outputs.
- ``hessian`` and ``hvp`` are forward-over-reverse: the gradient is computed
  with ``create_graph=True`` inside a dual level, so the tangents (identity
  rows, or ``v``) ride through the backward pass and the gradient's tangent
  is ``H v``. ``vhp`` stays reverse-over-reverse, as in PyTorch.

What they cost (not in PyTorch): ``jacobian_elements`` and ``hessian_elements``
give a result's size from shapes alone, before anything is computed, and a
batched pass of k rows allocates about k times ``pass_elements`` of the
function's graph (``hessian_pass_elements`` for a Hessian), so a caller that
must bound memory picks ``chunk_size`` with ``fitting_chunk_size``. Results do
not depend on ``chunk_size``.
"""

from __future__ import annotations

import functools

from engine import backend, ops
from engine.autograd import forward_ad as fwAD
from engine.autograd.backward import grad as autograd_grad
from engine.autograd.backward import run_backward
from engine.autograd.grad_mode import enable_grad, is_grad_enabled, set_grad_enabled
from engine.op import numel
from engine.tensor import Tensor

__all__ = ["fitting_chunk_size", "hessian", "hessian_elements", "hessian_pass_elements", "hvp", "jacobian",
           "jacobian_elements", "jvp", "pass_elements", "vhp", "vjp"]

_STRATEGIES = ("auto", "forward-mode", "reverse-mode")


# ---- PyTorch's argument handling ---------------------------------------------


def _on_inputs_device(transform):
    """Run ``transform`` with its first input's CUDA device current: the arrays it makes itself
    (identity blocks, zero fills, stacked rows) are allocated there, as cupy allocates on the
    current device. Inputs on the CPU or on the current device change nothing."""

    @functools.wraps(transform)
    def run(func, inputs, *args, **kwargs):
        return backend.call_on_device_of(inputs, transform, func, inputs, *args, **kwargs)

    return run


def _as_tuple(value, arg_name, fn_name):
    """``(was_tuple, tuple_of_tensors)``, with PyTorch's TypeError for anything else."""
    is_tuple = isinstance(value, tuple)
    values = value if is_tuple else (value,)
    for i, element in enumerate(values):
        if not isinstance(element, Tensor):
            where = f"value at index {i}" if is_tuple else f"given {arg_name}"
            raise TypeError(
                f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of Tensors but the "
                f"{where} has type {type(element)}."
            )
    return is_tuple, values


def _tuple_postprocess(result, to_unpack):
    """Undo ``_as_tuple``: one level per flag (outputs, inputs)."""
    if isinstance(to_unpack, tuple):
        if not to_unpack[1]:
            result = tuple(r[0] for r in result)
        if not to_unpack[0]:
            result = result[0]
    elif not to_unpack:
        result = result[0]
    return result


def _grad_preprocess(inputs, create_graph, need_graph):
    """Fresh tensors for the user function: views keeping history when ``create_graph`` asks for it.

    A fresh leaf keeps the input's forward-mode tangent, so a reverse-mode
    transform inside an enclosing dual level (``jacfwd(jacrev(f))``) still
    propagates it.
    """
    result = []
    for x in inputs:
        if create_graph and x.requires_grad:
            result.append(x.view_as(x))
        else:
            fresh = x.detach().requires_grad_(need_graph)
            tangent = fwAD._tangent(x)
            if tangent is not None:
                fwAD._set_tangent(fresh, tangent)
            result.append(fresh)
    return tuple(result)


def _grad_postprocess(values, create_graph):
    if not values or isinstance(values[0], Tensor):
        return values if create_graph else tuple(_detached(v) for v in values)
    return tuple(_grad_postprocess(v, create_graph) for v in values)


def _writable(array):
    """``array``, copied if it is a read-only (broadcast) view: results must be the caller's to modify."""
    flags = getattr(array, "flags", None)
    return array.copy() if flags is not None and not flags.writeable else array


def _detached(t):
    data = t._data
    return t.detach() if _writable(data) is data else Tensor._make(data.copy())


def _validate_v(v, other, is_other_tuple):
    if len(other) != len(v):
        if is_other_tuple:
            raise RuntimeError(f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for i, (element, reference) in enumerate(zip(v, other)):
        if tuple(element.shape) != tuple(reference.shape):
            prefix = f"Entry {i} in " if is_other_tuple else ""
            raise RuntimeError(f"{prefix}v has invalid size: should be {reference.size()} but got {element.size()}.")


def _prepare_v(v, reference, is_reference_tuple, fn_name, create_graph, what):
    """Validate ``v`` against ``reference`` (inputs or outputs), or default it for one element."""
    if v is None:
        if len(reference) != 1 or reference[0].numel() != 1:
            raise RuntimeError(f"The vector v can only be None if {what} a single Tensor with a single element.")
        return None
    _, v = _as_tuple(v, "v", fn_name)
    v = _grad_preprocess(v, create_graph, need_graph=False)
    _validate_v(v, reference, is_reference_tuple)
    return v


def _check_requires_grad(values, kind, strict):
    """PyTorch's strict-mode checks, with its messages."""
    if not strict:
        return
    for i, value in enumerate(values):
        if value is None:
            raise RuntimeError(
                f"The output of the user-provided function is independent of input {i}. "
                "This is not allowed in strict mode."
            )
        if value.requires_grad:
            continue
        if kind == "hessian":
            raise RuntimeError(
                f"The hessian of the user-provided function with respect to input {i} is independent of the "
                "input. This is not allowed in strict mode. You should ensure that your function is thrice "
                "differentiable and that the hessian depends on the inputs."
            )
        if kind == "jacobian":
            raise RuntimeError(
                "While computing the hessian, found that the jacobian of the user-provided function with "
                f"respect to input {i} is independent of the input. This is not allowed in strict mode. You "
                "should ensure that your function is twice differentiable and that the jacobian depends on "
                "the inputs (this would be violated by a linear function for example)."
            )
        raise RuntimeError(
            f"Output {i} of the user-provided function does not require gradients. The outputs must be "
            "computed in a differentiable manner from the input when running in strict mode."
        )


def _fill_in_zeros(grads, references, strict, create_graph, stage):
    """Zeros where a gradient is None (or, in strict mode, PyTorch's error for that stage)."""
    result = []
    for i, (g, reference) in enumerate(zip(grads, references)):
        if g is None:
            if strict:
                what = {"back": "output", "double_back": "jacobian", "forward": "output",
                        "forward_over_back": "hessian"}[stage]
                raise RuntimeError(
                    f"The {what} of the user-provided function is independent of input {i}. "
                    "This is not allowed in strict mode."
                )
            g = _zeros_like(reference)
        elif strict and create_graph and not g.requires_grad:
            what = "jacobian" if stage in ("back", "forward") else "hessian"
            raise RuntimeError(
                f"The {what} of the user-provided function is independent of input {i}. "
                "This is not allowed in strict mode when create_graph=True."
            )
        result.append(g)
    return tuple(result)


def _zeros_like(t, shape=None):
    xp = backend.namespace_of(t._data)
    return Tensor._make(xp.zeros(tuple(t.shape) if shape is None else shape, dtype=t._data.dtype))


def _single_output(outputs, is_tuple, fn_name, strict):
    _check_requires_grad(outputs, "outputs", strict)
    if is_tuple:
        raise RuntimeError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {fn_name} should contain a single element")


# ---- identity rows and chunks --------------------------------------------------


def _spans(total, chunk_size, vectorize):
    """The ``[start, stop)`` row ranges pushed through together."""
    step = 1 if not vectorize else (chunk_size or total or 1)
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def _check_chunk_size(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _identity_block(start, stop, offset, numel, like):
    """Rows ``start:stop`` of the identity, restricted to columns ``offset:offset+numel``; None if all zero."""
    low, high = max(start, offset), min(stop, offset + numel)
    if low >= high:
        return None
    xp = backend.namespace_of(like)
    block = xp.zeros((stop - start, numel), dtype=like.dtype)
    index = xp.arange(low, high)
    block[index - start, index - offset] = 1
    return block


def _offsets(tensors):
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += t.numel()
    return offsets, total


def _basis(start, stop, offset, x, batched):
    """The identity rows for input ``x`` as a tangent or cotangent: ``(k, *x.shape)``, or ``x.shape`` per row."""
    block = _identity_block(start, stop, offset, x.numel(), x._data)
    if block is None:
        return None
    return block.reshape((stop - start, *x.shape) if batched else tuple(x.shape))


def _join(pieces, batched):
    """Rows computed chunk by chunk (or one by one) as one ``(n, ...)`` array or Tensor."""
    if isinstance(pieces[0], Tensor):
        if not batched:
            return ops.stack(pieces, dim=0)
        return pieces[0] if len(pieces) == 1 else ops.cat(pieces, dim=0)
    xp = backend.namespace_of(pieces[0])
    if not batched:
        return xp.stack(pieces)
    return pieces[0] if len(pieces) == 1 else xp.concatenate(pieces)


def _as_result(rows, shape, transpose=False):
    """``rows`` (n, ...) reshaped to the result ``shape``; transposed first when rows index inputs."""
    if isinstance(rows, Tensor):
        if transpose:
            rows = rows.reshape(rows.shape[0], -1).mT
        return rows.reshape(shape)
    if transpose:
        rows = rows.reshape(rows.shape[0], -1).T
    return Tensor._make(_writable(rows.reshape(shape)))


def _rows_of(tangent, start, stop, offset, numel, batched):
    """The rows of a chunk's output tangent that belong to one input (``offset:offset+numel``)."""
    low, high = max(start, offset), min(stop, offset + numel)
    if low >= high:
        return None
    return tangent[low - start : high - start] if batched else tangent


# ---- what a transform costs ------------------------------------------------------------


def jacobian_elements(output_shapes, input_shapes) -> int:
    """Elements of ``jacobian``'s result: block (i, j) has shape ``outputs[i].shape + inputs[j].shape``."""
    return sum(numel(s) for s in output_shapes) * sum(numel(s) for s in input_shapes)


def hessian_elements(input_shapes) -> int:
    """Elements of ``hessian``'s result: block (i, j) has shape ``inputs[i].shape + inputs[j].shape``."""
    total = sum(numel(s) for s in input_shapes)
    return total * total


def _input_numels(node):
    """Elements of each input of ``node``, aligned with ``next_functions``.

    A variadic op (cat, stack) records its inputs' shapes as one tuple of shapes.
    """
    shapes = node.input_shapes or ()
    if len(shapes) == 1 and shapes[0] and not isinstance(shapes[0][0], int):
        shapes = shapes[0]
    return [numel(s) if s is not None else 0 for s in shapes]


def pass_elements(outputs) -> int:
    """Elements one row of a batched pass through the graph of ``outputs`` allocates, at most.

    Per node: the gradient arriving at its output, and for each input that has
    a gradient edge a temporary of the output's shape (broadcasting rules work at
    the output's shape before summing back) plus the gradient at the input's
    shape. Every node runs once per pass, so the sum bounds the pass (buffers
    are freed as it goes; the bound errs high). Forward-mode tangents follow
    the same nodes' outputs, so the same sum bounds a forward pass's columns.
    ``outputs`` must have been computed with grad enabled on inputs that require it.
    """
    total = sum(o.numel() for o in outputs)  # the seeds (or the outputs' tangents)
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    seen = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out_numel = numel(node.out_shape)
        total += out_numel
        for (child, _), in_numel in zip(node.next_functions, _input_numels(node)):
            if child is not None:
                total += out_numel + in_numel
                if id(child) not in seen:
                    stack.append(child)
    return total


# A Hessian row's tangents ride through the forward pass and through the backward pass's values,
# whose tangent rules make temporaries of their own (forward-over-reverse); reverse-over-reverse
# runs the backward of the backward. Three times a reverse pass bounds both: measured with
# tracemalloc on sums of elementwise chains, outer products and matmuls, a pass's peak stayed
# under 0.7 of the bound.
HESSIAN_PASS_FACTOR = 3


def hessian_pass_elements(outputs) -> int:
    """Elements one row of a batched Hessian pass allocates, at most (see ``pass_elements``)."""
    return HESSIAN_PASS_FACTOR * pass_elements(outputs)


def fitting_chunk_size(max_pass_elements: int, row_elements: int, chunk_size: int | None = None) -> int:
    """The most rows, at most ``chunk_size``, whose batched pass holds ``max_pass_elements``; at least one."""
    fitting = max(1, max_pass_elements // max(1, row_elements))
    return fitting if chunk_size is None else min(chunk_size, fitting)


# ---- jacobian ------------------------------------------------------------------


@_on_inputs_device
def jacobian(func, inputs, create_graph=False, strict=False, vectorize=True, strategy="auto", chunk_size=None):
    """The Jacobian of ``func`` at ``inputs``: ``result[i][j]`` has shape ``outputs[i].shape + inputs[j].shape``.

    ``strategy``: "reverse-mode" (one batched backward over the identity
    cotangents), "forward-mode" (one batched forward pass over the identity
    tangents) or "auto" (forward mode when the inputs have fewer elements
    than the outputs). ``vectorize=False`` computes row by row instead;
    ``chunk_size`` bounds how many rows go through at once.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(
            'Expected strategy to be "auto", "forward-mode" or "reverse-mode". Hint: If your function has more '
            'outputs than inputs, "forward-mode" tends to be more performant. Otherwise, prefer to use "reverse-mode".'
        )
    _check_chunk_size(chunk_size)
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    if strategy == "forward-mode":
        if strict:
            raise RuntimeError(
                'torch.autograd.functional.jacobian: `strict=True` and `strategy="forward-mode"` are not '
                'supported together (yet). Please either set `strict=False` or `strategy="reverse-mode"`.'
            )
        is_outputs_tuple, result = _jacobian_forward(func, inputs, create_graph, vectorize, chunk_size)
        return _tuple_postprocess(result, (is_outputs_tuple, is_inputs_tuple))

    with enable_grad():
        prepared = _grad_preprocess(inputs, create_graph, need_graph=True)
        outputs = func(*prepared)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function", "jacobian")
        _check_requires_grad(outputs, "outputs", strict)
    if strategy == "auto" and not strict and sum(x.numel() for x in inputs) < sum(y.numel() for y in outputs):
        is_outputs_tuple, result = _jacobian_forward(func, inputs, create_graph, vectorize, chunk_size)
    else:
        result = _jacobian_reverse(outputs, prepared, create_graph, strict, vectorize, chunk_size)
    return _tuple_postprocess(result, (is_outputs_tuple, is_inputs_tuple))


def _jacobian_reverse(outputs, inputs, create_graph, strict, vectorize, chunk_size):
    """Rows of d outputs[i] / d inputs: per output, batched backward passes over identity cotangents."""
    result = []
    for i, out in enumerate(outputs):
        m = out.numel()
        pieces = [[] for _ in inputs]
        independent = [not out.requires_grad or m == 0 for _ in inputs]
        if out.requires_grad:
            for start, stop in _spans(m, chunk_size, vectorize):
                seed = Tensor._make(_basis(start, stop, 0, out, vectorize))
                with set_grad_enabled(create_graph or is_grad_enabled()):
                    grads = autograd_grad(out, inputs, seed, retain_graph=True, create_graph=create_graph,
                                          allow_unused=True, is_grads_batched=vectorize)
                for j, g in enumerate(grads):
                    if g is None:
                        independent[j] = True
                        continue
                    if strict and create_graph and not g.requires_grad:
                        raise RuntimeError(
                            f"The jacobian of the user-provided function is independent of input {j}. "
                            "This is not allowed in strict mode when create_graph=True."
                        )
                    pieces[j].append(g if create_graph else g._data)
        row = []
        for j, x in enumerate(inputs):
            shape = tuple(out.shape) + tuple(x.shape)
            if independent[j] or not pieces[j]:
                if strict:
                    raise RuntimeError(
                        f"Output {i} of the user-provided function is independent of input {j}. "
                        "This is not allowed in strict mode."
                    )
                row.append(_zeros_like(x, shape))
            else:
                row.append(_as_result(_join(pieces[j], vectorize), shape))
        result.append(tuple(row))
    return tuple(result)


def _dual_inputs(inputs, start, stop, offsets, batched, create_graph, need_graph=False):
    """Fresh copies of ``inputs`` carrying the identity rows ``start:stop`` as tangents (call in a level)."""
    duals = []
    for x, offset in zip(inputs, offsets):
        if create_graph and x.requires_grad:
            dual = x.view_as(x)
        else:
            dual = x.detach().requires_grad_(need_graph)
        tangent = _basis(start, stop, offset, x, batched)
        if tangent is not None:
            fwAD._set_tangent(dual, Tensor._make(tangent) if create_graph else tangent)
        duals.append(dual)
    return duals


def _jacobian_forward(func, inputs, create_graph, vectorize, chunk_size):
    """Columns of the Jacobian: batched forward passes with identity tangents."""
    offsets, total = _offsets(inputs)
    pieces = None
    outputs = None
    is_outputs_tuple = False
    with enable_grad() if create_graph else set_grad_enabled(is_grad_enabled()):
        for start, stop in _spans(total, chunk_size, vectorize):
            with fwAD.dual_level():
                duals = _dual_inputs(inputs, start, stop, offsets, vectorize, create_graph)
                is_outputs_tuple, outputs = _as_tuple(func(*duals), "outputs of the user-provided function",
                                                      "jacobian")
                if pieces is None:
                    pieces = [[[] for _ in inputs] for _ in outputs]
                for i, out in enumerate(outputs):
                    tangent = fwAD._tangent(out)
                    if tangent is None:
                        shape = ((stop - start,) if vectorize else ()) + tuple(out.shape)
                        tangent = _zeros_like(out, shape)
                        tangent = tangent if create_graph else tangent._data
                    elif create_graph and not isinstance(tangent, Tensor):
                        tangent = Tensor._make(tangent)
                    for j, x in enumerate(inputs):
                        rows = _rows_of(tangent, start, stop, offsets[j], x.numel(), vectorize)
                        if rows is not None:
                            pieces[i][j].append(rows)
    result = []
    for i, out in enumerate(outputs):
        row = []
        for j, x in enumerate(inputs):
            shape = tuple(out.shape) + tuple(x.shape)
            if x.numel() == 0 or not pieces[i][j]:
                row.append(_zeros_like(x, shape))
            else:
                row.append(_as_result(_join(pieces[i][j], vectorize), shape, transpose=True))
        result.append(tuple(row))
    return is_outputs_tuple, tuple(result)


# ---- hessian -------------------------------------------------------------------


@_on_inputs_device
def hessian(func, inputs, create_graph=False, strict=False, vectorize=True, outer_jacobian_strategy="forward-mode",
            chunk_size=None):
    """The Hessian of a scalar ``func``: ``result[i][j]`` has shape ``inputs[i].shape + inputs[j].shape``.

    Forward-over-reverse by default: the gradient, computed with
    ``create_graph=True`` inside a dual level whose tangents are identity rows,
    carries the Hessian rows as its tangent. ``outer_jacobian_strategy=
    "reverse-mode"`` (also used for ``create_graph=True`` and ``strict=True``)
    takes the Jacobian of the gradient by reverse mode, as PyTorch does.
    """
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError('Expected strategy to be either "forward-mode" or "reverse-mode".')
    _check_chunk_size(chunk_size)
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy == "forward-mode" and not create_graph and not strict:
        result = _hessian_forward_over_reverse(func, inputs, vectorize, chunk_size)
        return _tuple_postprocess(result, (is_inputs_tuple, is_inputs_tuple))

    def single_output(*args):
        out = func(*args)
        is_tuple, outputs = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _single_output(outputs, is_tuple, "hessian", strict)
        return out.squeeze()

    def gradient(*args):
        jac = jacobian(single_output, args, create_graph=True, strategy="reverse-mode")
        _check_requires_grad(jac, "jacobian", strict)
        return jac

    result = jacobian(gradient, inputs, create_graph=create_graph, strict=strict, vectorize=vectorize,
                      strategy="reverse-mode", chunk_size=chunk_size)
    return _tuple_postprocess(result, (is_inputs_tuple, is_inputs_tuple))


def _hessian_forward_over_reverse(func, inputs, vectorize, chunk_size):
    offsets, total = _offsets(inputs)
    pieces = [[[] for _ in inputs] for _ in inputs]  # [gradient a][tangent input b]
    with enable_grad():
        for start, stop in _spans(total, chunk_size, vectorize):
            with fwAD.dual_level():
                duals = _dual_inputs(inputs, start, stop, offsets, vectorize, False, need_graph=True)
                out = func(*duals)
                is_tuple, outputs = _as_tuple(out, "outputs of the user-provided function", "hessian")
                _single_output(outputs, is_tuple, "hessian", False)
                if not out.requires_grad:
                    continue
                # Tensors (so tangents propagate) but nothing recorded: the graph of this pass is not needed.
                grads = run_backward([out], [None], False, True, inputs=duals, accumulate=False,
                                     allow_unused=True, record=False)
                for a, (g, xa) in enumerate(zip(grads, inputs)):
                    if g is None:
                        continue  # the gradient is a constant: this Hessian row block is zero
                    tangent = fwAD._tangent(g)
                    for b, xb in enumerate(inputs):
                        low, high = max(start, offsets[b]), min(stop, offsets[b] + xb.numel())
                        if low >= high:
                            continue
                        if tangent is None:  # no dependence on this chunk's directions: zero rows
                            rows = backend.namespace_of(xa._data).zeros(
                                ((high - low,) if vectorize else ()) + tuple(xa.shape), dtype=xa._data.dtype)
                        else:
                            rows = _rows_of(tangent, start, stop, offsets[b], xb.numel(), vectorize)
                        pieces[a][b].append(rows)
    result = []
    for a, xa in enumerate(inputs):
        row = []
        for b, xb in enumerate(inputs):
            shape = tuple(xa.shape) + tuple(xb.shape)
            if not pieces[a][b]:
                row.append(_zeros_like(xa, shape))
            else:
                row.append(_as_result(_join(pieces[a][b], vectorize), shape, transpose=True))
        result.append(tuple(row))
    return tuple(result)


# ---- products --------------------------------------------------------------------


@_on_inputs_device
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T J)``: one backward pass."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True)
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function", "vjp")
        _check_requires_grad(outputs, "outputs", strict)
        v = _prepare_v(v, outputs, is_outputs_tuple, "vjp", create_graph, "the user-provided function returns")
    result = _reverse_product(outputs, inputs, v, create_graph, strict, "back")
    return _products(outputs, is_outputs_tuple, result, is_inputs_tuple, create_graph)


def _reverse_product(outputs, inputs, v, create_graph, strict, stage):
    """``v^T d outputs / d inputs`` by one backward pass, zeros where an input is unused."""
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _grad_of_differentiable(outputs, inputs, v, create_graph)
        return _fill_in_zeros(grads, inputs, strict, create_graph, stage)


def _products(outputs, is_outputs_tuple, result, is_result_tuple, create_graph):
    """``(outputs, result)`` of a product, each detached unless ``create_graph`` and unpacked as given."""
    return (_tuple_postprocess(_grad_postprocess(outputs, create_graph), is_outputs_tuple),
            _tuple_postprocess(_grad_postprocess(result, create_graph), is_result_tuple))


def _grad_of_differentiable(outputs, inputs, grad_outputs, create_graph, record=True, retain_graph=None):
    """``autograd.grad`` over the outputs that require grad; all None when none does."""
    grad_outputs = (None,) * len(outputs) if grad_outputs is None else grad_outputs
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    if not record:
        return run_backward([o for o, _ in pairs], [g for _, g in pairs], False, create_graph, inputs=inputs,
                            accumulate=False, allow_unused=True, record=False)
    return autograd_grad([o for o, _ in pairs], inputs, [g for _, g in pairs], retain_graph=retain_graph,
                         create_graph=create_graph, allow_unused=True)


@_on_inputs_device
def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J v)``: one forward pass with dual tensors (true forward mode)."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
        # Forward mode needs no graph; strict mode records one only to find inputs an output ignores.
        inputs = _grad_preprocess(inputs, create_graph, need_graph=strict)
        v = _prepare_tangents(v, inputs, is_inputs_tuple, "jvp", create_graph)
        with fwAD.dual_level():
            is_outputs_tuple, outputs = _call_with_tangents(func, inputs, v, create_graph, "jvp")
            tangents = [_tangent_tensor(fwAD._tangent(out)) for out in outputs]
        if strict:
            _check_requires_grad(outputs, "outputs", strict)
            zeros = [_zeros_like(out) for out in outputs]
            for i, g in enumerate(_grad_of_differentiable(outputs, inputs, zeros, False)):
                if g is None:
                    raise RuntimeError(
                        f"The output of the user-provided function is independent of input {i}. "
                        "This is not allowed in strict mode."
                    )
        result = _fill_in_zeros(tangents, outputs, strict, create_graph, "forward")
    return _products(outputs, is_outputs_tuple, result, is_outputs_tuple, create_graph)


def _prepare_tangents(v, inputs, is_inputs_tuple, fn_name, create_graph):
    """``v`` checked against the inputs; omitted (one single-element input), a tangent of one."""
    v = _prepare_v(v, inputs, is_inputs_tuple, fn_name, create_graph, "the input to the user-provided function is")
    if v is None:
        v = (Tensor._make(backend.namespace_of(inputs[0]._data).ones_like(inputs[0]._data)),)
    return v


def _call_with_tangents(func, inputs, v, create_graph, fn_name):
    """``(is_outputs_tuple, outputs)`` of ``func`` on ``inputs`` carrying tangents ``v`` (call in a dual level)."""
    for x, t in zip(inputs, v):
        fwAD._set_tangent(x, _tangent_value(t, x, create_graph))
    outputs = func(*inputs)
    return _as_tuple(outputs, "outputs of the user-provided function", fn_name)


def _tangent_value(t, x, differentiable):
    """``t`` as stored on a dual: a Tensor when the result must be differentiable, else its array."""
    if differentiable:
        return t if t.dtype is x.dtype else t.to(x.dtype)
    return t._data.astype(x._data.dtype, copy=False)


def _tangent_tensor(value):
    if value is None or isinstance(value, Tensor):
        return value
    return Tensor._make(value)


@_on_inputs_device
def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T H)``: reverse-over-reverse, as in PyTorch."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vhp")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True)
        v = _prepare_v(v, inputs, is_inputs_tuple, "vhp", create_graph,
                       "the input to the user-provided function is")
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function", "vhp")
        _single_output(outputs, is_outputs_tuple, "vhp", strict)
        jac = _grad_of_differentiable(outputs, inputs, None, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
    result = _reverse_product(jac, inputs, v, create_graph, strict, "double_back")
    return _products(outputs, is_outputs_tuple, result, is_inputs_tuple, create_graph)


@_on_inputs_device
def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H v)``: forward-over-reverse (the gradient's tangent along ``v``)."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hvp")
        inputs = _grad_preprocess(inputs, create_graph, need_graph=True)
        v = _prepare_tangents(v, inputs, is_inputs_tuple, "hvp", create_graph)
        with fwAD.dual_level():
            is_outputs_tuple, outputs = _call_with_tangents(func, inputs, v, create_graph, "hvp")
            _single_output(outputs, is_outputs_tuple, "hvp", strict)
            # The gradient's graph is needed only to be differentiated again or checked (strict).
            jac = _grad_of_differentiable(outputs, inputs, None, create_graph=True, record=create_graph or strict)
            _check_requires_grad(jac, "jacobian", strict)
            tangents = [None if g is None else _tangent_tensor(fwAD._tangent(g)) for g in jac]
        result = _fill_in_zeros(tangents, inputs, strict, create_graph, "forward_over_back")
    return _products(outputs, is_outputs_tuple, result, is_inputs_tuple, create_graph)
