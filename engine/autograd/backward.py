"""Reverse mode: ``backward`` and ``grad`` over the recorded graph.

``run_backward`` reads as its phases: seed each output (ones for a scalar);
plan the pass (with ``inputs``, only the nodes that lead to them); run the
nodes, each once, from the highest sequence number down, so that a node runs
after every node that feeds it; and hand back what was captured. The
traversal is iterative (a 100 000-op chain must not hit Python's recursion
limit). A node's gradient goes through its op's vjp rules (picked from the
table, never named here), is summed back to each input's shape for
broadcasting ops, and is added into the buffer of the node it feeds.
``AccumulateGrad`` nodes end paths at leaves, adding into ``.grad``.

Memory: a gradient buffer that this pass made and nothing else holds (a rule's
fresh result, or a sum the pass computed) is the pass's own. Further gradients
for the same node are added into it in place, and a leaf whose ``.grad`` is
empty takes it without a copy. Everything else (the caller's gradient, a
broadcast or other view, a rule's pass-through of ``g``, anything a hook or
``autograd.grad`` saw) is never written: it is copied or summed into a new
buffer. A node's saved tensors are dropped as soon as it has run (unless
``retain_graph``), so a pass holds what is still to be consumed and no more.

With ``create_graph=True`` the rules run on Tensors with grad mode on, so the
backward pass is itself recorded and can be differentiated again.
"""

from __future__ import annotations

import os
import sys
from heapq import heappop, heappush

from engine import backend, ops
from engine.autograd import grad_mode
from engine.autograd.graph import FREED_MESSAGE, AccumulateGrad, SavedTensor, accumulator, describe_tensor
from engine.autograd.inplace import refresh_view
from engine.tensor import Tensor

_ndarray = backend.ndarray

# Shape checks after every vjp (names the op on failure); on under pytest or GRADSERVE_DEBUG=1.
DEBUG = bool(os.environ.get("GRADSERVE_DEBUG")) or "pytest" in sys.modules

# Observers of backward passes (the profiler): ``node(node, run)`` as each node of the pass
# ``run`` starts, and ``node(None, run)`` when the pass ends (also by an exception). Empty in
# normal use, so one check per node is the whole cost.
node_observers: list = []



def _root_node(tensor, position):
    origin = tensor._view_origin
    if origin is not None and origin[1] != tensor._version_counter[0]:
        refresh_view(tensor)  # a view whose base changed in place: its history is the base's now
    if tensor.grad_fn is not None:
        return tensor.grad_fn
    if tensor._requires_grad:
        return accumulator(tensor)
    raise RuntimeError(f"element {position} of tensors does not require grad and does not have a grad_fn")


def _seed(tensor, grad, create_graph, position=0):
    """The starting gradient of one output: ones for a scalar, else the caller's ``grad``."""
    if isinstance(grad, _BatchedGrad):
        grad = grad.grad
        return grad if create_graph else grad._data.astype(tensor._data.dtype, copy=False)
    if grad is None:
        if tensor._data.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        data = tensor._data
        # asarray(1) is a C call; xp.ones goes through numpy's Python layer (a scalar loss is the usual root).
        if type(data) is _ndarray:
            seed = backend.numpy.asarray(1, dtype=data.dtype).reshape(data.shape)
        else:
            with backend.on_device(data):  # on the output's device (cuda:1...)
                seed = backend.namespace_of(data).asarray(1, dtype=data.dtype).reshape(data.shape)
        return Tensor._make(seed) if create_graph else seed
    if not isinstance(grad, Tensor):
        grad = Tensor(grad, dtype=tensor.dtype)
    if tuple(grad.shape) != tuple(tensor.shape) and grad._data.ndim <= tensor._data.ndim:
        raise RuntimeError(
            f"Mismatch in shape: grad_output[{position}] has a shape of {tuple(grad.shape)} and "
            f"output[{position}] has a shape of {tuple(tensor.shape)}."
        )
    expected, got = backend.device_of(tensor._data), backend.device_of(grad._data)
    if got != expected:
        raise RuntimeError(f"invalid gradient at index {position} - expected device {expected} but got {got}")
    if create_graph:
        return grad
    data = grad._data
    return data if data.dtype == tensor._data.dtype else data.astype(tensor._data.dtype)


def _needed(roots, targets):
    """The nodes from which some target is reachable: the only ones worth running."""
    needed = set(targets)
    order = []  # post-order over the graph, iteratively
    visited = set()
    for root in roots:
        if root in visited:
            continue
        stack = [(root, iter(root.next_functions))]
        visited.add(root)
        while stack:
            node, children = stack[-1]
            advanced = False
            for child, _ in children:
                if child is not None and child not in visited:
                    visited.add(child)
                    stack.append((child, iter(child.next_functions)))
                    advanced = True
                    break
            if not advanced:
                stack.pop()
                order.append(node)
    for node in order:  # children come before parents in post-order
        if node not in needed and any(c in needed for c, _ in node.next_functions if c is not None):
            needed.add(node)
    return needed


def _check_runnable(node):
    """PyTorch's errors for a node whose saved tensors were freed by an earlier pass, or changed
    in place since it saved them."""
    if node.freed:
        raise RuntimeError(FREED_MESSAGE)
    if node.checks:
        _check_versions(node)


def _free_saved(node, retain_graph):
    """After a table op's node ran: without ``retain_graph`` its saved tensors go, as PyTorch's do
    (a second backward then raises FREED_MESSAGE)."""
    op = node.op
    if not retain_graph and (op.saves_out or op.saved_inputs):
        node.saved = None
        node.freed = True


def _check_versions(node):
    for counter, expected, position in node.checks:
        if counter[0] != expected:
            if position == -1:
                what = f"{describe_tensor(node.out_shape, node.out_dtype)}, which is output 0 of {node.name()},"
            else:
                saved = node.saved[position + 1]
                if isinstance(saved, SavedTensor):
                    saved = saved.unpack(node)
                what = f"{describe_tensor(saved._data.shape, saved._data.dtype)}, an input of {node.name()},"
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: {what} is at version {counter[0]}; expected version {expected} "
                "instead. Hint: the in-place op came after the one that saved it; use an "
                "out-of-place version (e.g. x = x + y instead of x += y) or .clone() first."
            )


def _missing_rule(op, index):
    if op.vjp is None:
        return NotImplementedError(f"vjp of {op.name} not defined")
    return NotImplementedError(f"vjp of {op.name} not defined for input {op.input_names[index]}")


def _check_shape(grad, node, index, batch_shape):
    expected = tuple(batch_shape) + tuple(node.input_shapes[index])
    if tuple(grad.shape) != expected:
        raise RuntimeError(
            f"vjp of {node.op.name} (input {index}) returned a gradient of shape {tuple(grad.shape)}, "
            f"expected {expected}"
        )


def _array_grads(node, g, g_sole):
    """The inputs' gradients as arrays: the plain backward, the hot path. With them, for each,
    whether it is this pass's alone (see ``_sole_gradients``)."""
    values = [g]
    for value in node.saved:
        if isinstance(value, Tensor):
            value = value._data
        elif type(value) is tuple:  # a variadic op's list of inputs
            value = [v._data for v in value]
        elif type(value) is SavedTensor:  # packed by saved-tensor hooks
            value = value.unpack(node)._data
        values.append(value)
    values.extend(node.input_shapes)
    values.append(node.out_shape)
    grads = _input_grads(node, g, values, as_arrays=True)
    for grad in grads:
        if grad is not None and grad.nbytes >= SOLE_MIN_BYTES:
            owned = getattr(node.op, "owned_gradients", None)
            if owned is not None:  # a compiled plan's: its buffers are reused, so only the op can tell
                return grads, owned(node.params, grads, g)  # which results are fresh arrays nothing else holds
            return grads, _sole_gradients(grads, values, node.params, g, g_sole)
    return grads, None  # all small: none tracked


# Gradients smaller than this are never the pass's own: numpy recycles small blocks itself, so
# adding them in place or handing them on uncopied saves little, while telling costs every node.
SOLE_MIN_BYTES = 1 << 16


def _owns_memory(array) -> bool:
    """Whether ``array`` is a whole, writable buffer of its own: not a view (a broadcast, a
    reshape of ``g``), not a scalar, not read-only."""
    if type(array) is _ndarray:
        return array.base is None and array.flags.writeable
    return backend.is_array(array) and array.base is None  # cupy's arrays are always writable


def _sole_gradients(grads, values, params, g, g_sole):
    """Which of a node's gradients nothing outside this pass can hold.

    A rule's result is the pass's alone when it owns its memory and is none of the
    rule's arguments (a rule may hand back ``g`` or a saved input as they are) and no
    other input gets the very same array. ``g`` passed through unchanged (``add``'s
    rule) stays the pass's when it was and only one input receives it.
    """
    sole = []
    for grad in grads:
        if grad is g:
            mine = g_sole
        else:
            mine = grad is not None and grad.nbytes >= SOLE_MIN_BYTES and _owns_memory(grad) \
                and not _among(grad, values) and not _among(grad, params.values())
        if mine and len(grads) > 1:
            mine = [other is grad for other in grads].count(True) == 1
        sole.append(mine)
    return sole


def _among(array, values) -> bool:
    """Whether ``array`` is one of ``values`` (or of a list among them: a variadic op's inputs)."""
    return any(value is array or (type(value) is list and any(v is array for v in value)) for value in values)


def _tensor_grads(node, g):
    """The inputs' gradients as Tensors, recorded: ``create_graph=True``."""
    saved = node.saved
    if any(type(value) is SavedTensor for value in saved):  # packed by saved-tensor hooks
        saved = [node._unpacked(i) if type(value) is SavedTensor else value for i, value in enumerate(saved)]
        if saved[0] is not None:
            saved[0] = saved[0]._data
    out = saved[0]
    if out is not None:
        # The result as a Tensor again, so derivatives through it reach this node's inputs.
        out = Tensor._make(out)
        out.grad_fn = node
        out._requires_grad = True
        out._tangents = node.out_tangents  # forward-over-reverse needs the result's tangent
    return _input_grads(node, g, [g, out, *saved[1:], *node.input_shapes, node.out_shape], as_arrays=False)


def _input_grads(node, g, values, as_arrays):
    """Run the vjp rule of each input that leads somewhere on ``values`` (``[g, out, *inputs]``).

    A broadcasting op's gradients are summed back to the input's shape
    (keeping any leading batch axes of ``g``): on arrays by
    ``backend.sum_to_shape``, on Tensors by the recorded ``sum_to_size`` op.
    """
    op = node.op
    params = node.params
    if op.variadic:
        if op.vjp is None:
            raise _missing_rule(op, 0)
        grads = op.vjp.call(values, params)
        return [None if child is None else grads[i] for i, (child, _) in enumerate(node.next_functions)]
    rules = op.vjp
    batch = g.ndim - len(node.out_shape)
    grads = []
    for i, (child, _) in enumerate(node.next_functions):
        if child is None:
            grads.append(None)
            continue
        rule = rules[i] if rules else None
        if rule is None:
            raise _missing_rule(op, i)
        grad = rule.call(values, params)
        if as_arrays and type(grad) is not _ndarray and not backend.is_array(grad):
            grad = backend.namespace_of(g).asarray(grad)  # on g's device, not always the host
        if op.broadcast:
            shape = node.input_shapes[i]  # a tuple, as grad.shape[batch:] is for arrays and Tensors
            if grad.shape[batch:] != shape:
                if as_arrays:
                    grad = backend.sum_to_shape(grad, shape, batch)
                else:
                    grad = ops.sum_to_size(grad, shape=shape, lead=batch)
        if DEBUG:
            _check_shape(grad, node, i, g.shape[:batch])
        grads.append(grad)
    return grads


def _as_grad_tensor(g):
    return g if isinstance(g, Tensor) else Tensor._make(g)


def _run_hooks(hooks, g, create_graph):
    for hook in hooks:
        result = hook(_as_grad_tensor(g))
        if result is not None:
            g = result if create_graph else result._data
    return g


def _accumulate(node, g, create_graph, sole):
    """AccumulateGrad: add ``g`` into the leaf's ``.grad`` (PyTorch's accumulation semantics).

    ``sole``: ``g`` is this pass's alone, so an empty ``.grad`` may take it as it is (PyTorch
    steals such a gradient too). Otherwise ``.grad`` gets a copy: a user may hold ``g`` (the
    gradient passed to ``backward``, a hook's argument) and must not see a later backward
    accumulate into it, nor ``.grad`` change when they write to theirs.
    """
    variable = node.variable
    if variable is None:
        return  # the leaf is gone: nobody can read its gradient
    if variable._hooks:
        g = _run_hooks(variable._hooks, g, create_graph)
        sole = False  # a hook saw it (and may keep it), or returned a tensor of its own
    if create_graph:
        grad = _as_grad_tensor(g)
        variable._grad = grad if variable._grad is None else variable._grad + grad
        return
    if g.dtype != variable._data.dtype:
        g = g.astype(variable._data.dtype)
        sole = _owns_memory(g)
    if variable._grad is None:
        if not sole:
            # (numpy's full reductions give scalars, not 0-d arrays: .grad must be a writable array)
            g = g.copy() if g.ndim else backend.namespace_of(g).array(g)
        variable._grad = Tensor._make(g)
    elif variable._grad.grad_fn is not None:
        variable._grad = Tensor._make(variable._grad._data + g)
    else:
        variable._grad._data += g
        variable._grad._version_counter[0] += 1


def run_backward(outputs, grad_outputs, retain_graph, create_graph, inputs=None, accumulate=True,
                 allow_unused=False, record=True):
    """The engine behind ``Tensor.backward``, ``autograd.backward`` and ``autograd.grad``.

    With ``inputs``, gradients are captured at those tensors (and, when
    ``accumulate`` is false, returned instead of added to ``.grad``); only
    nodes that lead to them run. ``record=False`` with ``create_graph=True``
    runs the rules on Tensors without recording them: forward-over-reverse
    needs the tangents that ride along, not a graph of the backward pass.
    """
    if inputs is None and accumulate and not create_graph and len(outputs) == 1 and not node_observers \
            and _one_node_to_leaves(outputs[0], grad_outputs[0], retain_graph):
        return None
    roots = [_root_node(t, i) for i, t in enumerate(outputs)]
    seeds = [_seed(t, g, create_graph, i) for i, (t, g) in enumerate(zip(outputs, grad_outputs))]
    backward_pass = _BackwardPass(create_graph, create_graph if retain_graph is None else retain_graph, accumulate)
    backward_pass.plan(roots, seeds, inputs, outputs)
    backward_pass.run_nodes(record)
    if inputs is None:
        return None
    return _captured_grads(inputs, backward_pass.captured, allow_unused)


def _one_node_to_leaves(tensor, grad, retain_graph):
    """The pass of ``tensor.backward()`` when its graph is one node whose inputs are all leaves
    (a compiled call's ``CompiledFunctionBackward``, or one eager op on leaves), run without the
    pass's buffers and heap: what ``run_node`` does for that node and then for each leaf, in the
    same order and with the same rules. False, having done nothing, when the graph is anything
    else, or anything (a hook, ``retain_grad``, a device array, a custom Function) asks for the
    general pass."""
    root = tensor.grad_fn
    if root is None or root.op is None or tensor._output_nr or tensor._view_origin is not None \
            or root.pre_hooks or root.post_hooks or root.retained is not None:
        return False
    leaves = []
    for child, _ in root.next_functions:
        if child is None:
            continue
        if type(child) is not AccumulateGrad or child.pre_hooks or child.post_hooks or child.retained is not None \
                or child in leaves:
            return False
        leaves.append(child)
    g = _seed(tensor, grad, False)
    if type(g) is not _ndarray:  # device arrays: the general pass places each node on g's device
        return False
    _check_runnable(root)
    token = grad_mode._grad_enabled.set(False)
    try:
        grads, sole_grads = _array_grads(root, g, False)  # the caller's gradient is never the pass's
        _free_saved(root, retain_graph)
        del g
        order = [(child, i) for i, (child, _) in enumerate(root.next_functions)
                 if child is not None and grads[i] is not None]
        if len(order) > 1:  # the general pass runs leaves from the highest sequence number down
            order.sort(key=lambda pair: -pair[0].sequence_nr)
        for child, i in order:
            _accumulate(child, grads[i], False, bool(sole_grads and sole_grads[i]))
    finally:
        grad_mode._grad_enabled.reset(token)
    return True


class _BackwardPass:
    """One backward pass: which nodes run, the gradient each has received so far (``buffers``),
    the nodes ready to run, and the gradients captured at the ``inputs`` of ``autograd.grad``."""

    __slots__ = ("accumulate", "buffers", "captured", "create_graph", "needed", "output_grads", "ready",
                 "retain_graph", "sole", "targets")

    def __init__(self, create_graph, retain_graph, accumulate):
        self.create_graph = create_graph
        self.retain_graph = retain_graph
        self.accumulate = accumulate
        self.targets = None  # node -> position in ``inputs``, when gradients are captured there
        self.needed = None  # with targets: the nodes from which one of them is reachable
        self.buffers = {}
        self.ready = []  # a heap of (-sequence_nr, node)
        self.captured = {}
        self.sole = set()  # the nodes whose buffer is this pass's alone: it may be written in place
        # node -> {output number: gradient} for outputs past the first of a node with several
        # (a custom Function's); output 0's gradient is in ``buffers`` as for every node.
        self.output_grads = {}

    def plan(self, roots, seeds, inputs, outputs):
        """The targets and the nodes needed to reach them (with ``inputs``), and the roots ready
        to run, holding their seeds."""
        if inputs is not None:
            self.targets = {}
            for i, t in enumerate(inputs):
                if not t._requires_grad:
                    raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require grad")
                self.targets[t.grad_fn if t.grad_fn is not None else accumulator(t)] = i
            self.needed = _needed(roots, self.targets)
        buffers = self.buffers
        for root, seed, output in zip(roots, seeds, outputs):
            if output._output_nr:  # a later output of a node with several (a custom Function's)
                self.add_output_grad(root, output._output_nr, seed)
            elif root in buffers:  # one node, the root of several outputs
                self.add_into(root, seed, False)
            else:
                buffers[root] = seed
                heappush(self.ready, (-root.sequence_nr, root))

    def run_nodes(self, record):
        """Run the nodes from the highest sequence number down (see graph._sequence): every node
        runs once, after all the nodes that feed it a gradient."""
        ready = self.ready
        buffers = self.buffers
        create_graph = self.create_graph
        token = grad_mode._grad_enabled.set(create_graph and record)
        try:
            while ready:
                node = heappop(ready)[1]
                if node_observers:
                    for observer in node_observers:
                        observer.node(node, buffers)
                # (popped into the call, not a local: run_node lets go of g before the buffers
                # of the nodes it feeds grow)
                if create_graph or type(buffers[node]) is _ndarray:
                    self.run_node(node, buffers.pop(node))
                else:  # the node's rules run on device arrays, outside apply: on g's device (cuda:1...)
                    with backend.on_device(buffers[node]):
                        self.run_node(node, buffers.pop(node))
        finally:
            grad_mode._grad_enabled.reset(token)
            if node_observers:
                for observer in node_observers:
                    observer.node(None, buffers)

    def run_node(self, node, g):
        """Hooks, retained and captured gradients; then a leaf's accumulation, or the node's vjp
        rules, whose gradients go on to the nodes they feed."""
        create_graph = self.create_graph
        sole = bool(self.sole) and node in self.sole  # (an empty set, the usual case, answers at once)
        if sole:
            self.sole.discard(node)
        if node.pre_hooks and g is not _NO_GRAD:
            g = _run_hooks(node.pre_hooks, g, create_graph)
            sole = False  # a hook saw it (and may keep it), or returned a tensor of its own
        if node.retained is not None:
            _retain(node, g, create_graph)
        targets = self.targets
        if targets is not None and node in targets:
            if self.capture(node, g, sole):
                return
            sole = False  # captured: returned to the caller of autograd.grad
        if type(node) is AccumulateGrad:
            if self.accumulate and targets is None:  # (with targets, only theirs accumulate: capture)
                _accumulate(node, g, create_graph, sole)
            if node.post_hooks:  # Node.register_hook on a leaf's node: no inputs, the leaf's gradient
                _run_post_hooks(node, [], g, create_graph)
            return
        if node.freed or node.checks:  # (tested here: this runs for every node)
            _check_runnable(node)
        sole_grads = None
        if node.op is None:  # a custom Function's node (engine.autograd.Function) runs its own backward:
            # user code, so nothing it returns is the pass's own
            grads = node.run_function_backward(None if g is _NO_GRAD else g, self.output_grads.pop(node, None),
                                               create_graph, self.retain_graph)
        else:
            if create_graph:
                grads = _tensor_grads(node, g)
            else:
                grads, sole_grads = _array_grads(node, g, sole)
            _free_saved(node, self.retain_graph)
        if node.post_hooks:
            grads = _run_post_hooks(node, grads, g, create_graph)
            sole_grads = None  # the hooks saw them (and may keep them)
        del g  # the node's incoming gradient is consumed: let it go before its inputs' gradients add up
        if sole_grads is not None:
            self.send_tracked(node, grads, sole_grads)
            return
        # Each input's gradient goes into the buffer of the node it feeds; the first one makes
        # that node ready. (Inline, not a method: this runs for every edge of the graph.)
        needed = self.needed
        buffers = self.buffers
        for (child, output_nr), grad in zip(node.next_functions, grads):
            if child is not None and grad is not None and (needed is None or child in needed):
                if output_nr:
                    self.add_output_grad(child, output_nr, grad)
                elif child in buffers:
                    self.add_into(child, grad, False)
                else:
                    buffers[child] = grad
                    heappush(self.ready, (-child.sequence_nr, child))

    def send_tracked(self, node, grads, sole_grads):
        """The loop above, for gradients large enough to track: those that are the pass's alone
        make the buffers they start, or are added into, the pass's own."""
        needed = self.needed
        buffers = self.buffers
        for (child, output_nr), grad, grad_sole in zip(node.next_functions, grads, sole_grads):
            if child is not None and grad is not None and (needed is None or child in needed):
                if output_nr:
                    self.add_output_grad(child, output_nr, grad)
                elif child in buffers:
                    self.add_into(child, grad, grad_sole)
                else:
                    buffers[child] = grad
                    if grad_sole:
                        self.sole.add(child)
                    heappush(self.ready, (-child.sequence_nr, child))

    def add_into(self, node, grad, grad_sole):
        """Add ``grad`` to the gradient ``node`` has received so far: in place into whichever of
        the two is this pass's alone (so a node fed by many costs no fresh buffer per edge), else
        into a new buffer, which is then the pass's own."""
        buffers = self.buffers
        previous = buffers[node]
        previous_sole = node in self.sole
        if (previous_sole or grad_sole) and type(previous) is _ndarray and type(grad) is _ndarray \
                and previous.shape == grad.shape and previous.dtype == grad.dtype:
            if previous_sole:
                backend.numpy.add(previous, grad, out=previous)
            else:  # (x + y and y + x are the same floats)
                backend.numpy.add(grad, previous, out=grad)
                buffers[node] = grad
                self.sole.add(node)
            return
        total = buffers[node] = _added(previous, grad)
        if type(total) is _ndarray and total.base is None and total.nbytes >= SOLE_MIN_BYTES:
            self.sole.add(node)
        elif previous_sole:  # (a dtype or shape that did not fit; on a device)
            self.sole.discard(node)

    def add_output_grad(self, node, output_nr, grad):
        """Add ``grad`` to the gradient of output ``output_nr`` (> 0) of ``node``, which is ready
        to run once any of its outputs has one."""
        slots = self.output_grads.setdefault(node, {})
        previous = slots.get(output_nr)
        slots[output_nr] = grad if previous is None else _added(previous, grad)
        if node not in self.buffers:
            self.buffers[node] = _NO_GRAD
            heappush(self.ready, (-node.sequence_nr, node))

    def capture(self, node, g, sole):
        """Keep ``g`` as the gradient at a target node. True when the node's work ends there: a
        leaf (which accumulates only when asked to), or a node that leads to no other target."""
        self.captured[node] = None if g is _NO_GRAD else g
        if node.op is None and node in self.output_grads:  # a custom Function's later outputs
            for output_nr, grad in self.output_grads[node].items():
                self.captured[(node, output_nr)] = grad
        if type(node) is AccumulateGrad:
            if self.accumulate:
                _accumulate(node, g, self.create_graph, False)  # the caller gets g as well
            return True
        return not any(c in self.needed for c, _ in node.next_functions if c is not None)


def _added(previous, grad):
    """The sum of two gradients for one node. They are on one device, but device arrays may not
    be on the current one (a transfer's vjp put them there); a Tensor's add is placed by apply."""
    if type(grad) is _ndarray or isinstance(grad, Tensor):
        return previous + grad
    with backend.on_device(grad):
        return previous + grad


class _NoGradYet:
    """The buffer of a node whose first output has no gradient (yet): adding one gives it."""

    __slots__ = ()

    def __add__(self, grad):
        return grad


_NO_GRAD = _NoGradYet()


def _run_post_hooks(node, grads, g, create_graph):
    """``hook(grad_inputs, grad_outputs)`` of ``Node.register_hook``; a returned tuple replaces the
    gradients passed on."""
    grad_outputs = (None if g is _NO_GRAD else _as_grad_tensor(g),)
    for hook in node.post_hooks:
        grad_inputs = tuple(None if x is None else _as_grad_tensor(x) for x in grads)
        replaced = hook(grad_inputs, grad_outputs)
        if replaced is not None:
            grads = [None if x is None else (x if create_graph else x._data) for x in replaced]
    return grads


def _captured_grads(inputs, captured, allow_unused):
    """The gradients captured at ``inputs``, as Tensors (None for an unused one, if allowed)."""
    results = []
    for t in inputs:
        node = t.grad_fn if t.grad_fn is not None else accumulator(t)
        g = captured.get((node, t._output_nr) if t._output_nr else node)
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            results.append(None)
            continue
        results.append(_as_grad_tensor(g))
    return results


def _retain(node, g, create_graph):
    tensor = node.retained()
    if tensor is None or g is _NO_GRAD:
        return
    grad = _as_grad_tensor(g)
    if not create_graph:
        grad = Tensor._make(grad._data.copy())
    tensor._grad = grad if tensor._grad is None else tensor._grad + grad


def _tensors(value):
    if value is None:
        return None
    if isinstance(value, Tensor):
        return (value,)
    return tuple(value)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Compute gradients of ``tensors`` and accumulate them into the leaves' ``.grad``."""
    tensors = _tensors(tensors)
    grads = _tensors(grad_tensors) or (None,) * len(tensors)
    if len(grads) != len(tensors):
        raise RuntimeError(f"got {len(grads)} gradients for {len(tensors)} tensors")
    inputs = _tensors(inputs)
    if inputs is not None and not inputs:
        raise RuntimeError("'inputs' argument to backward() cannot be empty.")
    captured = run_backward(tensors, grads, retain_graph, create_graph, inputs=inputs, accumulate=True,
                            allow_unused=True)
    if inputs is not None:
        for t, g in zip(inputs, captured):
            if g is None or t.grad_fn is None:
                continue  # leaves were accumulated by their AccumulateGrad
            t._grad = g if t._grad is None else t._grad + g


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, only_inputs=True,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of ``outputs`` with respect to ``inputs``, returned, not accumulated.

    ``is_grads_batched``: each grad_output has a leading batch axis and the
    result is the batch of vector-Jacobian products, computed in one pass.
    """
    single = isinstance(inputs, Tensor)
    outputs = _tensors(outputs)
    inputs = _tensors(inputs)
    grads = _tensors(grad_outputs) or (None,) * len(outputs)
    if allow_unused is None:
        allow_unused = materialize_grads
    if is_grads_batched:
        grads = tuple(_batched_seed(t, g) for t, g in zip(outputs, grads))
    result = run_backward(outputs, grads, retain_graph, create_graph, inputs=inputs, accumulate=False,
                          allow_unused=allow_unused)
    if materialize_grads:
        result = [r if r is not None else _zeros_like(t) for r, t in zip(result, inputs)]
    return tuple(result) if not single else (result[0],)


def _batched_seed(output, grad):
    if grad is None:
        raise RuntimeError("is_grads_batched=True needs grad_outputs")
    grad = grad if isinstance(grad, Tensor) else Tensor(grad)
    if tuple(grad.shape[1:]) != tuple(output.shape):
        raise RuntimeError(
            f"is_grads_batched: each grad_output must be a batch of the output's shape "
            f"{tuple(output.shape)}, got {tuple(grad.shape)}"
        )
    return _BatchedGrad(grad)


class _BatchedGrad:
    """Marks a seed whose leading axis is a batch (accepted by _seed as-is)."""

    def __init__(self, grad):
        self.grad = grad


def _zeros_like(t):
    xp = backend.namespace_of(t._data)
    with backend.on_device(t._data):
        return Tensor._make(xp.zeros_like(t._data))

