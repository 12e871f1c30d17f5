"""The recorded graph: backward nodes (``grad_fn``) and ``AccumulateGrad``.

A node is created for every recorded op. Its class is named after the op's
``grad_fn`` name (``SinBackward0``), generated from the derivative table, so
``print(t.grad_fn)`` reads as it does in PyTorch. ``next_functions`` holds one
``(node or None, 0)`` edge per input, exactly as PyTorch prints it.
"""

from __future__ import annotations

import itertools
import weakref

from engine import backend


class Node:
    """A backward node: what backward needs to push ``g`` through one op.

    ``saved`` is the vector the op's vjp rules pick from, ``[out, *inputs]``
    (entries backward does not need are None). ``checks`` pairs each saved
    tensor's version counter with the version it had when saved.
    """

    __slots__ = (
        "__weakref__",
        "checks",
        "freed",
        "input_shapes",
        "next_functions",
        "op",
        "out_dtype",
        "out_shape",
        "out_tangents",
        "params",
        "pre_hooks",
        "retained",
        "saved",
        "sequence_nr",
    )

    def __init__(self, op, params, next_functions, saved, checks, input_shapes, out_shape, out_dtype):
        self.sequence_nr = next(_sequence)
        self.op = op
        self.params = params
        self.next_functions = next_functions
        self.saved = saved
        self.checks = checks
        self.input_shapes = input_shapes
        self.out_shape = out_shape
        self.out_dtype = out_dtype
        self.out_tangents = None  # the result's forward-AD tangents (see engine.autograd.forward_ad)
        self.freed = False
        self.pre_hooks = None
        self.retained = None

    def name(self) -> str:
        return type(self).__name__

    def _sequence_nr(self) -> int:
        return self.sequence_nr

    def register_prehook(self, hook):
        if self.pre_hooks is None:
            self.pre_hooks = []
        self.pre_hooks.append(hook)
        return _RemovableHandle(self.pre_hooks, hook)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {id(self):#x}>"


class AccumulateGrad(Node):
    """The node that ends every path at a leaf: it adds the gradient into ``variable.grad``."""

    __slots__ = ("_variable",)

    def __init__(self, variable):
        self.sequence_nr = -1 - next(_sequence)
        self._variable = weakref.ref(variable)
        self.op = None
        self.params = None
        self.next_functions = ()
        self.saved = None
        self.checks = ()
        self.freed = False
        self.pre_hooks = None
        self.retained = None
        data = variable._data
        self.out_shape = data.shape
        self.out_dtype = data.dtype
        self.out_tangents = None
        self.input_shapes = ()

    @property
    def variable(self):
        """The leaf (held weakly: the leaf keeps its node alive, not the other way round)."""
        return self._variable()


# Creation order. A node's inputs always exist before it, so running nodes from the highest
# sequence number down is a topological order of any backward pass (PyTorch does the same).
# AccumulateGrad nodes, made lazily, take negative numbers: they run after every other node.
_sequence = itertools.count()

_node_classes: dict[str, type] = {}


def node_class(name: str) -> type:
    """The Node subclass called ``name`` (e.g. ``SinBackward0``), made once."""
    cls = _node_classes.get(name)
    if cls is None:
        cls = _node_classes[name] = type(name, (Node,), {"__slots__": ()})
    return cls


def accumulator(tensor) -> AccumulateGrad:
    """The leaf's AccumulateGrad node, made once per leaf and kept by it (the node refers
    back weakly, so there is no reference cycle to wait for the garbage collector)."""
    node = tensor._accumulator
    if node is None:
        node = tensor._accumulator = AccumulateGrad(tensor)
    return node


class _RemovableHandle:
    __slots__ = ("hook", "hooks")

    def __init__(self, hooks, hook):
        self.hooks = hooks
        self.hook = hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def describe_tensor(shape, dtype) -> str:
    """PyTorch's way of naming a tensor in errors: ``[torch.FloatTensor [3]]``."""
    kind = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
            "int64": "LongTensor", "int32": "IntTensor", "bool": "BoolTensor"}
    name = kind.get(backend.dtype(dtype).name, "Tensor")
    dims = ", ".join(str(n) for n in shape)
    return f"[engine.{name} [{dims}]]"
