"""The recorded graph: backward nodes (``grad_fn``) and ``AccumulateGrad``.

A node is created for every recorded op. Its class is named after the op's
``grad_fn`` name (``SinBackward0``), generated from the derivative table, so
``print(t.grad_fn)`` reads as it does in PyTorch. ``next_functions`` holds one
``(node or None, 0)`` edge per input, exactly as PyTorch prints it.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from contextvars import ContextVar

from engine import backend


class Node:
    """A backward node: what backward needs to push ``g`` through one op.

    ``saved`` is the vector the op's vjp rules pick from, ``[out, *inputs]``
    (entries backward does not need are None). ``checks`` pairs each saved
    tensor's version counter with the version it had when saved.
    """

    __slots__ = (
        "__weakref__",
        "_metadata",
        "checks",
        "freed",
        "input_shapes",
        "next_functions",
        "op",
        "out_dtype",
        "out_shape",
        "out_tangents",
        "params",
        "post_hooks",
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
        self.post_hooks = None
        self.retained = None
        self._metadata = None

    def name(self) -> str:
        """The node's name as PyTorch prints it (``SinBackward0``, ``MyFnBackward``)."""
        return type(self).__name__

    def _sequence_nr(self) -> int:
        return self.sequence_nr

    @property
    def metadata(self) -> dict:
        """A dict for the user's own notes about this node (PyTorch's ``Node.metadata``)."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    def _register_tensor_hook(self, hook, output_nr=0):
        """``hook(grad)`` on the gradient of this node's result (``Tensor.register_hook``)."""
        if self.pre_hooks is None:
            self.pre_hooks = []
        self.pre_hooks.append(hook)
        return _RemovableHandle(self.pre_hooks, hook)

    def register_prehook(self, hook):
        """``hook(grad_outputs) -> tuple or None`` before the node runs; a returned tuple replaces
        the gradients of its outputs."""

        def on_gradient(grad):
            replaced = hook((grad,))
            return None if replaced is None else replaced[0]

        return self._register_tensor_hook(on_gradient)

    def register_hook(self, hook):
        """``hook(grad_inputs, grad_outputs) -> tuple or None`` after the node ran; a returned tuple
        replaces the gradients it passes on to its inputs."""
        if self.post_hooks is None:
            self.post_hooks = []
        self.post_hooks.append(hook)
        return _RemovableHandle(self.post_hooks, hook)

    # ---- saved tensors, by PyTorch's names --------------------------------------

    def _positions_of_saved(self) -> dict:
        """PyTorch name -> position in ``saved`` (0 the result, i + 1 input i), for what this op's
        vjp rules keep, named from the table's vocabulary."""
        op = self.op
        if op is None:
            return {}
        slots = {}
        if op.saves_out:
            slots[pytorch_name("out")] = 0
        if not op.variadic:
            for i, (kept, input_name) in enumerate(zip(op.keeps_input, op.input_names)):
                if kept:
                    slots[pytorch_name(input_name)] = i + 1
        elif op.saved_inputs:
            slots[pytorch_name(op.input_names[0])] = 1
        return slots

    def _lookup_saved(self, name, attribute):
        slots = self._positions_of_saved()
        if name in slots:
            if self.saved is None:
                raise RuntimeError(FREED_MESSAGE)
            return self._unpacked(slots[name])
        op = self.op
        if op is not None:
            for input_name, shape in zip(op.input_names, self.input_shapes):
                if name == pytorch_name(input_name) + "_sym_sizes" and _rules_name(op, input_name + "_shape"):
                    return tuple(shape)
            if self.params and name in self.params:
                value = self.params[name]
                return value
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attribute}'")

    def _unpacked(self, position):
        value = self.saved[position]
        if isinstance(value, SavedTensor):
            return value.unpack(self)
        if position == 0:  # the result, kept as its array: a Tensor again, with this node as history
            return _output_tensor(self, value)
        if type(value) is tuple:
            return value
        return value

    def _lookup_raw_saved(self, name, attribute):
        slots = self._positions_of_saved()
        if name not in slots:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attribute}'")
        if self.saved is None:
            raise RuntimeError(FREED_MESSAGE)
        position = slots[name]
        value = self.saved[position]
        if not isinstance(value, SavedTensor):
            tensor = _output_tensor(self, value) if position == 0 else value
            value = self.saved[position] = SavedTensor(tensor, self if position == 0 else None)
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {id(self):#x}>"


def _saved_names() -> set:
    """Every ``_saved_<name>`` a node may have, in PyTorch's words, from the table's vocabulary:
    the result, each input (and its sizes), each parameter."""
    from engine import ops

    names = {pytorch_name("out")}
    for op in ops.table.values():
        for input_name in op.input_names:
            names.update((pytorch_name(input_name), pytorch_name(input_name) + "_sym_sizes"))
        names.update(op.param_defaults)
    return names


def _install_saved_attributes() -> None:
    """``_saved_<name>`` and ``_raw_saved_<name>`` as properties of Node, so that only they go
    through the lookup (a ``__getattr__`` would slow every attribute read of every node)."""
    for name in _saved_names():
        taken = [a for a in ("_saved_" + name, "_raw_saved_" + name) if hasattr(Node, a)]
        if taken:  # a parameter named like one of Node's own attributes must not replace it
            raise TypeError(f"saved-tensor attribute {taken[0]} would shadow Node.{taken[0]}")
        setattr(Node, "_saved_" + name, property(
            lambda node, name=name: node._lookup_saved(name, "_saved_" + name),
            doc=f"What the node saved as {name} (AttributeError if it saved none).",
        ))
        setattr(Node, "_raw_saved_" + name, property(
            lambda node, name=name: node._lookup_raw_saved(name, "_raw_saved_" + name),
            doc=f"The SavedTensor behind _saved_{name}, to register pack/unpack hooks on.",
        ))


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
        self.post_hooks = None
        self.retained = None
        self._metadata = None
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


FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
    "graph a second time or if you need to access saved tensors after calling backward."
)

# The table's vocabulary (engine/ops.py) in PyTorch's words (derivatives.yaml), for the names of
# saved tensors: ``grad_fn._saved_self``, ``_saved_other``, ``_saved_result``. Parameters keep
# their names (``_saved_exponent``, ``_saved_dim``).
_PYTORCH_NAMES = {"x": "self", "y": "other", "out": "result", "grad": "grad_output", "cond": "condition",
                  "xs": "tensors", "w": "weight", "b": "bias"}


def pytorch_name(vocabulary_name: str) -> str:
    return _PYTORCH_NAMES.get(vocabulary_name, vocabulary_name)


def _rules_name(op, name) -> bool:
    """Whether one of ``op``'s vjp rules asks for ``name``."""
    rules = (op.vjp,) if op.variadic else op.vjp
    return any(rule is not None and name in rule.names for rule in rules)


def _output_tensor(node, array):
    """A node's result, kept as an array, as a Tensor whose history is the node."""
    from engine.tensor import Tensor

    tensor = Tensor._make(array)
    tensor.grad_fn = node
    tensor._requires_grad = True
    tensor._tangents = node.out_tangents
    return tensor


# Pack/unpack hook pairs of open ``saved_tensors_hooks`` blocks (innermost last), per context.
_saved_tensors_hooks: ContextVar[tuple] = ContextVar("saved_tensors_hooks", default=())


class SavedTensor:
    """A tensor a node keeps for backward, with optional pack/unpack hooks (PyTorch's
    ``torch._C._autograd.SavedTensor``, as ``grad_fn._raw_saved_self`` returns it).

    An output of the node that saves it is kept as its array, its version
    counter and its output number (a Tensor holding the node would be a
    reference cycle); anything else as the Tensor itself. Unpacking checks the
    version it had when saved, as built-in nodes do.
    """

    __slots__ = ("array", "is_output", "output_nr", "packed", "tensor", "unpack_hook", "version", "version_counter")

    def __init__(self, tensor, output_of=None, output_nr=0):
        self.is_output = output_of is not None
        self.version_counter = tensor._version_counter
        self.version = tensor._version_counter[0]
        self.output_nr = output_nr
        self.unpack_hook = None
        self.packed = None
        if output_of is not None:
            self.array = tensor._data
            self.tensor = None
        else:
            self.array = None
            self.tensor = tensor
        hooks = _saved_tensors_hooks.get()
        if hooks:
            pack, unpack = hooks[-1]
            self._pack(pack, unpack, tensor)

    def _pack(self, pack_hook, unpack_hook, tensor):
        token = _saved_tensors_hooks.set(())  # what the hook itself saves is not packed again
        try:
            self.packed = pack_hook(tensor)
        finally:
            _saved_tensors_hooks.reset(token)
        self.unpack_hook = unpack_hook
        self.array = None
        self.tensor = None

    def register_hooks(self, pack_hook, unpack_hook):
        """Pack the saved tensor now with ``pack_hook``; backward gets ``unpack_hook(packed)``."""
        if not callable(pack_hook) or not callable(unpack_hook):
            raise TypeError("register_hooks expects two callables, pack_hook and unpack_hook")
        if self.unpack_hook is not None:
            raise RuntimeError("pack_hook and unpack_hook have already been registered on this SavedVariable")
        self._pack(pack_hook, unpack_hook, self.unpack(None))

    def unpack(self, node):
        """The saved tensor: unpacked by the hook, or as it was saved (checked against its version)."""
        if self.unpack_hook is not None:
            value = self.unpack_hook(self.packed)
            from engine.tensor import Tensor

            if not isinstance(value, Tensor):
                raise TypeError(f"Output of saved tensor unpack_hook expected to be a Tensor but got result of "
                                f"type {type(value).__name__}")
            if self.is_output and node is not None:  # the node's own output: a new Tensor with it as history
                unpacked = Tensor._make(value._data)
                unpacked.grad_fn = node
                unpacked._requires_grad = True
                unpacked._output_nr = self.output_nr
                return unpacked
            return value
        if self.version_counter[0] != self.version:
            tensor = self.tensor
            data = self.array if tensor is None else tensor._data
            owner = node if tensor is None else tensor.grad_fn
            what = describe_tensor(data.shape, data.dtype)
            if owner is not None:
                output_nr = self.output_nr if tensor is None else tensor._output_nr
                # (PyTorch names a custom Function's node by the Function here: "output 0 of Exp")
                label = owner._forward_cls.__name__ if getattr(owner, "_forward_cls", None) else owner.name()
                what += f", which is output {output_nr} of {label},"
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: {what} is at version {self.version_counter[0]}; expected version {self.version} "
                "instead. Hint: the in-place op came after the one that saved it; use an out-of-place "
                "version (e.g. x = x + y instead of x += y) or .clone() first."
            )
        if self.tensor is not None:
            return self.tensor
        from engine.tensor import Tensor

        tensor = Tensor._make(self.array)
        tensor._version_counter = self.version_counter
        if node is not None:
            tensor.grad_fn = node
            tensor._requires_grad = True
            tensor._output_nr = self.output_nr
        return tensor


class saved_tensors_hooks:  # noqa: N801 - PyTorch's name
    """Within the block, every tensor saved for backward is stored as ``pack_hook(tensor)`` and
    given back to backward as ``unpack_hook(packed)`` (PyTorch's ``saved_tensors_hooks``)."""

    def __init__(self, pack_hook, unpack_hook):
        self.pack_hook = pack_hook
        self.unpack_hook = unpack_hook
        self._token = None

    def __enter__(self):
        global _open_blocks
        self._token = _saved_tensors_hooks.set((*_saved_tensors_hooks.get(), (self.pack_hook, self.unpack_hook)))
        with _hooks_lock:
            _open_blocks += 1
            _recording_flag(True)
        return self

    def __exit__(self, *exc):
        global _open_blocks
        _saved_tensors_hooks.reset(self._token)
        with _hooks_lock:
            _open_blocks -= 1
            _recording_flag(_open_blocks > 0)
        return False


# How many saved_tensors_hooks blocks are open in any thread: recording an op looks at the hooks
# (a ContextVar) only when some are, so ordinary ops pay one test of a flag.
_open_blocks = 0
_hooks_lock = threading.Lock()


def _recording_flag(active: bool) -> None:
    """Tell ``apply`` (engine.autograd.function, which imports this module) whether to pack."""
    from engine.autograd import function

    function.saved_tensors_hooks_active = active


class save_on_cpu(saved_tensors_hooks):  # noqa: N801 - PyTorch's name
    """Saved tensors are kept on the CPU (a copy) and moved back to their device for backward."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        def pack(tensor):
            return (tensor.device, tensor.detach().to("cpu").clone())

        def unpack(packed):
            device, tensor = packed
            return tensor.to(device)

        super().__init__(pack, unpack)


def pack_saved(node, result):
    """Pack every tensor ``node`` saved with the open ``saved_tensors_hooks``' hooks (called by
    ``apply`` while some block is open). The pack hook sees the result itself, as in PyTorch."""
    if not _saved_tensors_hooks.get() or node.saved is None:
        return
    from engine.tensor import Tensor

    for position, value in enumerate(node.saved):
        if position == 0 and value is not None:
            node.saved[0] = SavedTensor(result, node)
        elif isinstance(value, Tensor):
            node.saved[position] = SavedTensor(value)


def describe_tensor(shape, dtype) -> str:
    """PyTorch's way of naming a tensor in errors: ``[torch.FloatTensor [3]]``."""
    kind = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
            "int64": "LongTensor", "int32": "IntTensor", "bool": "BoolTensor"}
    name = kind.get(backend.dtype(dtype).name, "Tensor")
    dims = ", ".join(str(n) for n in shape)
    return f"[engine.{name} [{dims}]]"


_install_saved_attributes()
