"""Extending autograd: ``engine.autograd.Function``, PyTorch's custom Functions.

A subclass states ``forward`` and ``backward`` (and, for forward mode, ``jvp``)
as staticmethods; ``MyFn.apply(*args)`` runs ``forward`` with grad mode off
and, when an input requires grad, makes one backward node for the call. That
node is the ``ctx`` the staticmethods receive (as in PyTorch), an instance of
``<MyFn>Backward``, a class made once per Function. It is a ``graph.Node``
like every other: it sits in ``next_functions`` chains, ``run_backward``
runs it (``run_function_backward``), its tensors' edges carry the output
number, and it is freed after a backward without ``retain_graph``.

What PyTorch's contract gives, and how it lands here:

- ``forward(ctx, *args)``, or ``forward(*args)`` plus
  ``setup_context(ctx, inputs, output)``;
- ``ctx.save_for_backward`` (each saved tensor remembers the version it had
  when ``apply`` returned; ``ctx.saved_tensors`` checks it, as built-in nodes
  do), ``ctx.save_for_forward`` (what ``jvp`` reads back through
  ``ctx.saved_tensors``), ``ctx.needs_input_grad``, ``ctx.mark_dirty`` (the
  input modified in place is returned with this node as its history),
  ``ctx.mark_non_differentiable``, ``ctx.set_materialize_grads``;
- non-tensor arguments (their gradient must be None) and outputs (their
  incoming gradient is None); an input returned unchanged comes back as an
  alias of it;
- ``backward`` runs with grad mode as the pass asks (``create_graph=True``
  records it, so a backward written with engine ops can be differentiated
  again); ``once_differentiable`` runs it without recording and makes a
  second differentiation raise;
- ``jvp(ctx, *tangents)`` gives the outputs' tangents inside a dual level.
"""

from __future__ import annotations

import functools
import inspect
import weakref

from engine import backend, ops
from engine.autograd import function, grad_mode
from engine.autograd.graph import FREED_MESSAGE, Node, SavedTensor, accumulator
from engine.tensor import Tensor

__all__ = ["BackwardCFunction", "Function", "FunctionCtx", "InplaceFunction", "NestedIOFunction",
           "once_differentiable"]

_FREED = FREED_MESSAGE


class FunctionCtx:
    """What ``forward`` / ``setup_context`` tell the backward pass through ``ctx``."""

    __slots__ = ()

    def save_for_backward(self, *tensors):
        """Keep ``tensors`` (or None) for ``backward``; read them back with ``ctx.saved_tensors``."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(
                    f"save_for_backward can only save variables, but argument {i} is of type {type(t).__name__}"
                )
        self.to_save = tensors

    def save_for_forward(self, *tensors):
        """Keep ``tensors`` (or None) for ``jvp``, where ``ctx.saved_tensors`` gives them back."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(
                    f"save_for_forward expects all arguments to be tensors; but got {type(t).__name__} at {i}"
                )
        self.saved_for_forward = tensors

    def mark_dirty(self, *tensors):
        """Say that ``forward`` modified these inputs in place (and returns them)."""
        self.dirty_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        """Say that these outputs carry no gradient (indices, masks)."""
        self.non_differentiable = tensors

    def set_materialize_grads(self, value: bool):
        """With False, ``backward`` receives None (not zeros) for outputs that got no gradient."""
        self.materialize_grads = bool(value)

    def mark_shared_storage(self, *pairs):
        raise RuntimeError("mark_shared_storage is deprecated. Tensors with shared storages are automatically tracked.")


class BackwardCFunction(Node, FunctionCtx):
    """The backward node of one call of a custom Function, and its ``ctx``.

    Its subclass for ``MyFn`` is ``MyFnBackward`` (``_forward_cls`` is MyFn).
    Attributes set on ``ctx`` by the user live in the instance's ``__dict__``.
    """

    _forward_cls = None

    def __init__(self):
        # Node's fields: no table op (op is None marks a custom node for run_backward).
        Node.__init__(self, None, None, (), None, (), (), (), None)
        self.to_save = None
        self.saved_for_forward = None
        self.dirty_tensors = ()
        self.non_differentiable = ()
        self.materialize_grads = True
        self.needs_input_grad = ()
        self._saved_entries = None  # SavedTensor per saved value (None kept as None)
        self._saved_freed = False
        self._in_jvp = False
        self._outputs = ()  # per output: (shape, dtype, a sample array for zeros) or None (non-tensor)
        self._edge_of_arg = ()  # per forward argument: its edge index, or None (not a Tensor)
        self._tensor_hooks = []  # (output number, hook) of Tensor.register_hook on the outputs
        self._prehooks = []  # Node.register_prehook
        self._retained_outputs = {}  # output number -> the output (weakly) that retains its grad

    def __repr__(self) -> str:
        return f"<engine.autograd.function.{type(self).__name__} object at {id(self):#x}>"

    # ---- saved tensors ------------------------------------------------------

    @property
    def saved_tensors(self):
        """The tensors saved by ``save_for_backward`` (in ``jvp``: by ``save_for_forward``), each
        checked against the version it had when saved."""
        if self._in_jvp:
            return tuple(self.saved_for_forward or ())
        if self._saved_freed:
            raise RuntimeError(_FREED)
        entries = self._saved_entries
        if entries is None:
            return tuple(self.to_save or ())
        return tuple(None if e is None else e.unpack(self) for e in entries)

    saved_variables = saved_tensors

    def _save(self, outputs):
        """Turn ``to_save`` into SavedTensors once ``apply`` has wrapped the outputs: an output is
        kept as its array (no cycle through this node), an input as itself."""
        if self.to_save is None:
            return
        entries = []
        for t in self.to_save:
            if t is None:
                entries.append(None)
                continue
            output_nr = next((i for i, o in enumerate(outputs) if o is t), None)
            entries.append(SavedTensor(t, self if output_nr is not None else None, output_nr or 0))
        self._saved_entries = entries
        self.to_save = None

    # ---- hooks and retained gradients, per output ----------------------------------
    # A custom node has several outputs, so it keeps their hooks itself (Node.pre_hooks and
    # Node.retained serve nodes with one): run in registration order, retained gradients last.

    def _register_tensor_hook(self, hook, output_nr=0):
        from engine.autograd.graph import _RemovableHandle

        entry = (output_nr, hook)
        self._tensor_hooks.append(entry)
        return _RemovableHandle(self._tensor_hooks, entry)

    def register_prehook(self, hook):
        """``hook(grad_outputs) -> tuple or None``, every output's gradient, before backward runs."""
        from engine.autograd.graph import _RemovableHandle

        self._prehooks.append(hook)
        return _RemovableHandle(self._prehooks, hook)

    def _retain_output(self, tensor):
        """``retain_grad`` on one of this node's outputs."""
        self._retained_outputs[tensor._output_nr] = weakref.ref(tensor)

    def _run_hooks(self, grads, create_graph):
        """Tensor hooks, node pre-hooks and retained gradients on ``grads`` (one per output, Tensors
        or None), in PyTorch's order."""
        for output_nr, hook in list(self._tensor_hooks):
            if grads[output_nr] is not None:
                result = hook(grads[output_nr])
                if result is not None:
                    grads[output_nr] = result
        for hook in list(self._prehooks):
            result = hook(tuple(grads))
            if result is not None:
                grads = list(result)
        for output_nr, reference in self._retained_outputs.items():
            tensor = reference()
            grad = grads[output_nr]
            if tensor is not None and grad is not None:
                grad = grad if create_graph else Tensor._make(grad._data.copy())
                tensor._grad = grad if tensor._grad is None else tensor._grad + grad
        return grads

    # ---- backward ------------------------------------------------------------

    def apply(self, *grad_outputs):
        """Run this node's backward on ``grad_outputs`` (PyTorch's ``grad_fn.apply``)."""
        return self._call_backward(grad_outputs)

    def _call_backward(self, grad_outputs):
        cls = self._forward_cls
        backward = cls.backward if cls.backward is not Function.backward else cls.vjp
        if backward is Function.vjp:
            raise NotImplementedError(
                "You must implement either the backward or vjp method for your custom autograd.Function "
                "to use it with backward mode AD."
            )
        result = backward(self, *grad_outputs)
        return result if isinstance(result, tuple) else (result,)

    def run_function_backward(self, g, extra, create_graph, retain_graph):
        """The gradients for this node's edges, from ``g`` (output 0's gradient, or None) and
        ``extra`` (output number -> gradient) as ``run_backward`` collected them: arrays, or
        Tensors under ``create_graph``."""
        extra = extra or {}
        grad_outputs = [None if meta is None else (g if i == 0 else extra.get(i))
                        for i, meta in enumerate(self._outputs)]
        grad_outputs = [value if value is None or isinstance(value, Tensor) else Tensor._make(value)
                        for value in grad_outputs]
        if self._tensor_hooks or self._prehooks or self._retained_outputs:
            grad_outputs = self._run_hooks(grad_outputs, create_graph)
        if self.materialize_grads:
            for i, meta in enumerate(self._outputs):
                if grad_outputs[i] is None and meta is not None:
                    shape, dtype, sample = meta
                    with backend.on_device(sample):
                        grad_outputs[i] = Tensor._make(backend.namespace_of(sample).zeros(shape, dtype=dtype))
        results = self._call_backward(grad_outputs)
        if not retain_graph and self._saved_entries is not None:
            # Freed as built-in nodes free theirs; reading ctx.saved_tensors again then raises.
            self._saved_freed = True
            self._saved_entries = None
        return self._edge_grads(results, create_graph)

    def _edge_grads(self, results, create_graph):
        """The backward's results, one per forward argument, as one gradient per edge: checked,
        summed back to each input's shape and cast to its dtype."""
        args = self._edge_of_arg
        name = type(self).__name__
        if len(results) != len(args):
            if len(results) > len(args) and all(r is None for r in results[len(args):]):
                results = results[: len(args)]
            else:
                raise RuntimeError(
                    f"function {name} returned an incorrect number of gradients (expected {len(args)}, "
                    f"got {len(results)})"
                )
        grads = [None] * len(self.next_functions)
        for position, (edge, grad) in enumerate(zip(args, results)):
            if grad is None:
                continue
            if edge is None:
                raise RuntimeError(
                    f"function {name} returned a gradient different than None at position {position + 1}, "
                    "but the corresponding forward input was not a Variable"
                )
            if not isinstance(grad, Tensor):
                raise TypeError(f"function {name} returned a gradient of type {type(grad).__name__} at position "
                                f"{position + 1}; expected a Tensor or None")
            if self.next_functions[edge][0] is None:
                continue  # that input needs no gradient
            shape = self.input_shapes[edge]
            if tuple(grad.shape) != shape:
                if not _expandable(shape, tuple(grad.shape)):
                    raise RuntimeError(
                        f"Function {name} returned an invalid gradient at index {position} - got "
                        f"{list(grad.shape)} but expected shape compatible with {list(shape)}"
                    )
                grad = ops.sum_to_size(grad, shape=shape, lead=0)
            dtype = self._input_dtypes[edge]
            if grad._data.dtype != dtype:
                grad = grad.to(backend.dtype(dtype))
            grads[edge] = grad if create_graph else grad._data
        return grads


def _expandable(shape, grad_shape) -> bool:
    """Whether ``shape`` broadcasts to ``grad_shape`` (so the gradient sums back to it)."""
    if len(shape) > len(grad_shape):
        return False
    return all(s == 1 or s == g for s, g in zip(reversed(shape), reversed(grad_shape)))


class _FunctionMeta(type):
    """Makes ``<Name>Backward``, the node class of each Function subclass, when the class is made."""

    def __init__(cls, name, bases, attrs):
        backward_name = attrs.get("_backward_node_name", name + "Backward")
        cls._backward_cls = type(backward_name, (BackwardCFunction,), {"_forward_cls": cls,
                                                                      "__module__": "engine.autograd.function"})
        super().__init__(name, bases, attrs)


class Function(FunctionCtx, metaclass=_FunctionMeta):
    """Base class of custom autograd operations (``torch.autograd.Function``).

    Subclasses define ``forward``, ``backward`` (or ``vjp``) and optionally
    ``setup_context`` and ``jvp`` as staticmethods, and are called through
    ``apply``. See the module docstring for the contract.
    """

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            "Legacy autograd function with non-static forward method is deprecated. Please use new-style "
            "autograd function with static forward method. (Example: "
            "https://pytorch.org/docs/stable/autograd.html#torch.autograd.Function)"
        )

    @staticmethod
    def forward(*args, **kwargs):
        raise NotImplementedError(
            "You must implement the forward function for custom autograd.Function."
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError(
            "You must implement either the backward or vjp method for your custom autograd.Function "
            "to use it with backward mode AD."
        )

    vjp = backward

    @staticmethod
    def jvp(ctx, *grad_inputs):
        raise NotImplementedError(
            "You must implement the jvp function for custom autograd.Function to use it with forward mode AD."
        )

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on ``args`` and connect its outputs to the graph (see the module doc)."""
        ctx = cls._backward_cls()
        if cls.setup_context is not Function.setup_context and (kwargs or len(args) < cls._forward_arity()):
            # As PyTorch: setup_context sees every argument of forward, defaults filled in.
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, {}
        tensors = [a for a in args if isinstance(a, Tensor)]
        recording = grad_mode.is_grad_enabled() and any(t._requires_grad for t in tensors)
        ctx.needs_input_grad = tuple(
            isinstance(a, Tensor) and a._requires_grad and recording for a in args
        )
        forward_ad = _forward_ad_module()
        paused = forward_ad._current.set(None) if forward_ad is not None else None
        try:
            with grad_mode.no_grad():
                if cls.setup_context is not Function.setup_context:
                    output = cls.forward(*args)
                    cls.setup_context(ctx, args, output)
                else:
                    output = cls.forward(ctx, *args, **kwargs)
        finally:
            if paused is not None:
                forward_ad._current.reset(paused)
        single = not isinstance(output, tuple)
        outputs = (output,) if single else output
        outputs = _wrap_outputs(ctx, args, tensors, outputs, recording)
        if recording:
            ctx._save(outputs)
        if forward_ad is not None and forward_ad._current.get() is not None:
            _forward_mode(cls, ctx, args, outputs)
        return outputs[0] if single else tuple(outputs)

    @classmethod
    def _forward_arity(cls) -> int:
        """How many positional parameters ``forward`` declares (made once per class)."""
        arity = cls.__dict__.get("_arity")
        if arity is None:
            parameters = inspect.signature(cls.forward).parameters.values()
            arity = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
            cls._arity = arity
        return arity

    @staticmethod
    def vmap(info, in_dims, *args):
        raise NotImplementedError(
            "To use autograd.Function with vmap, you must either override the vmap staticmethod or set "
            "generate_vmap_rule=True."
        )


class InplaceFunction(Function):
    """PyTorch's base for Functions that may run in place (``inplace`` flag kept for them)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace


class NestedIOFunction(Function):
    """Kept for PyTorch's legacy name only; new code subclasses ``Function``."""


def _forward_ad_module():
    """engine.autograd.forward_ad when some dual level may be open (it installs the hook)."""
    if function.forward_ad_hook is None:
        return None
    from engine.autograd import forward_ad

    return forward_ad


def _alias(tensor):
    """A new Tensor object on ``tensor``'s memory and version counter (an input returned as is)."""
    alias = Tensor._make(tensor._data)
    alias._version_counter = tensor._version_counter
    return alias


def _wrap_outputs(ctx, args, tensors, outputs, recording):
    """Connect ``forward``'s outputs to ``ctx``, with PyTorch's rules: an input returned as is comes
    back as a new alias of it; an input modified in place (``mark_dirty``) comes back itself, its
    history now this node; outputs marked non-differentiable, and integer ones, carry no gradient."""
    dirty = {id(t) for t in ctx.dirty_tensors}
    non_diff = {id(t) for t in ctx.non_differentiable}
    input_ids = {id(t) for t in tensors}
    if recording:
        _connect_inputs(ctx, args)
    wrapped = []
    metas = []
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            wrapped.append(out)
            metas.append(None)
            continue
        is_dirty = id(out) in dirty
        if is_dirty:
            if recording and out.grad_fn is None and out._requires_grad:
                raise RuntimeError("a leaf Variable that requires grad has been used in an in-place operation.")
            out._version_counter[0] += 1  # PyTorch counts mark_dirty as one more write
        elif id(out) in input_ids:
            out = _alias(out)
        if recording and id(outputs[i]) not in non_diff and out._data.dtype.kind in "fc":
            out.grad_fn = ctx
            out._requires_grad = True
            out._output_nr = i
        elif recording and is_dirty:  # modified in place, and no gradient flows through it
            out.grad_fn = None
            out._requires_grad = False
        metas.append((out._data.shape, out._data.dtype, out._data))
        wrapped.append(out)
    if recording:
        first = next((m for m in metas if m is not None), None)
        ctx.out_shape, ctx.out_dtype = (first[0], first[1]) if first else ((), None)
        # Zeros for a missing gradient need only the shape, dtype and device: keep an empty
        # sample, not the output (which would keep its memory alive through the graph).
        ctx._outputs = tuple(None if m is None else (m[0], m[1], m[2].reshape(-1)[:0]) for m in metas)
    return wrapped


def _connect_inputs(ctx, args):
    """Edges to the tensor arguments' nodes (in argument order), and which edge each argument is."""
    edges = []
    edge_of_arg = []
    shapes = []
    dtypes = []
    for a in args:
        if not isinstance(a, Tensor):
            edge_of_arg.append(None)
            continue
        edge_of_arg.append(len(edges))
        if a.grad_fn is not None:
            edges.append((a.grad_fn, a._output_nr))
        elif a._requires_grad:
            edges.append((accumulator(a), 0))
        else:
            edges.append((None, 0))
        shapes.append(tuple(a._data.shape))
        dtypes.append(a._data.dtype)
    ctx.next_functions = tuple(edges)
    ctx._edge_of_arg = tuple(edge_of_arg)
    ctx.input_shapes = tuple(shapes)
    ctx._input_dtypes = tuple(dtypes)


def _zeros_like(tensor):
    data = tensor._data
    with backend.on_device(data):
        return Tensor._make(backend.namespace_of(data).zeros_like(data))


def _forward_mode(cls, ctx, args, outputs):
    """Tangents of the outputs from ``jvp`` when an input carries one at the open dual level."""
    from engine.autograd import forward_ad

    tangents = [forward_ad.unpack_dual(a).tangent if isinstance(a, Tensor) else None for a in args]
    if all(t is None for t in tangents):
        return
    # As in PyTorch, a tensor input without a tangent gets zeros; a non-tensor one, None.
    tangents = [
        _zeros_like(a) if t is None and isinstance(a, Tensor) else t for a, t in zip(args, tangents)
    ]
    if cls.jvp is Function.jvp:
        raise NotImplementedError(
            "You must implement the jvp function for custom autograd.Function to use it with forward mode AD."
        )
    ctx._in_jvp = True
    try:
        with grad_mode.no_grad():
            result = cls.jvp(ctx, *tangents)
    finally:
        ctx._in_jvp = False
    result = result if isinstance(result, tuple) else (result,)
    tensor_outputs = [o for o in outputs if isinstance(o, Tensor)]
    if len(result) != len(outputs) and len(result) != len(tensor_outputs):
        raise RuntimeError(
            f"{cls.__name__}.jvp returned {len(result)} tangents for {len(outputs)} outputs"
        )
    pairs = zip(outputs, result) if len(result) == len(outputs) else zip(tensor_outputs, result)
    for out, tangent in pairs:
        if not isinstance(out, Tensor) or tangent is None or out._data.dtype.kind not in "fc":
            continue
        if tuple(tangent.shape) != tuple(out.shape):
            raise RuntimeError(
                f"Trying to set a forward gradient that has a different size than that of the original "
                f"Tensor, this is not supported. Tensor is of size {list(out.shape)} while the given forward "
                f"gradient is of size {list(tangent.shape)}."
            )
        forward_ad._set_tangent(out, tangent._data.astype(out._data.dtype, copy=False))


# ---- once_differentiable ------------------------------------------------------


class _DelayedError(Function):
    """An identity whose backward raises: what once_differentiable puts after its gradients
    (PyTorch's node is ``torch::autograd::Error``, printed ``<Error>``)."""

    _backward_node_name = "Error"

    @staticmethod
    def forward(ctx, message, tensor):
        ctx.message = message
        return _alias(tensor)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def once_differentiable(backward):
    """Decorate a Function's ``backward`` that is not itself differentiable: it runs without
    recording, and differentiating its gradients again raises."""

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with grad_mode.no_grad():
            results = backward(ctx, *grad_outputs)
        if not grad_mode.is_grad_enabled():
            return results
        if not any(isinstance(g, Tensor) and g._requires_grad for g in grad_outputs):
            return results
        single = not isinstance(results, tuple)
        results = (results,) if single else results
        message = "trying to differentiate twice a function that was marked with @once_differentiable"
        wrapped = []
        for r in results:
            if isinstance(r, Tensor):
                if not r._requires_grad:  # (computed without recording) a leaf, so the node is made
                    r = r.detach().requires_grad_(True)
                r = _DelayedError.apply(message, r)
            wrapped.append(r)
        return wrapped[0] if single else tuple(wrapped)

    return wrapper
