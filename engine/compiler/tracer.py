"""Recording what a function does: the tracer behind ``engine.compile``.

While a compiled function is traced it runs eagerly, and three hooks report to
the tracer of the current context (a ``ContextVar``, so a request traced in one
thread never records another thread's ops):

- ``autograd.function.trace_hook``: every table op ``apply`` runs, with the
  arrays its forward received and the Tensor it made;
- ``tensor.value_hook``: every place a tensor's value reaches Python
  (``item``, and through it ``bool``/``int``/``float``/``index``; ``tolist``),
  which becomes a guard, or leaves the graph (``numpy``, ``engine.tensor(t)``),
  which is a graph break;
- ``creation.random_hook``: every random draw, which becomes a step that draws
  again.

Each value the function touches gets a *slot*: an argument, a captured tensor
(read by reference at every replay: a module's parameters, closures, tensors
made from constants inside the function), a constant (a Python number), a
random draw, a cotangent (the backward's input), or an op's output. A step
names its op, its params, the slots of its inputs and the slot of its output.

What the tracer cannot replay faithfully it marks as a *graph break* (with the
reason): the signature then runs eagerly, never wrongly.
"""

from __future__ import annotations

import contextvars
import importlib
import threading

from engine import backend, creation
from engine.autograd import function
from engine.tensor import Tensor

# The module (``engine.tensor`` is also the creation function, once engine is imported).
tensor_module = importlib.import_module("engine.tensor")

# What a slot holds.
ARGUMENT, CAPTURED, CONSTANT = "argument", "captured", "constant"
RANDOM, COTANGENT, STEP = "random", "cotangent", "step"

_active: contextvars.ContextVar = contextvars.ContextVar("engine_compile_tracer", default=None)
_installed = 0
_install_lock = threading.Lock()


def current():
    """The tracer recording in this context, or None."""
    return _active.get()


class OpStep:
    """One recorded table op: ``out = op(*inputs, **params)`` on the slots' arrays."""

    __slots__ = ("array_type", "dtype", "inputs", "op", "out", "params", "variadic", "xp")

    def __init__(self, op, inputs, params, out, result, xp):
        self.op = op
        self.inputs = inputs  # slot numbers (a variadic op's list is all of them)
        self.params = params
        self.out = out
        self.dtype = result.dtype  # the result dtype apply gave (PyTorch's promotion included)
        self.array_type = type(result)  # host or device array (to_device changes it)
        self.xp = xp  # the namespace the forward ran with: its first tensor's
        self.variadic = op.variadic


class RandomStep:
    """A random draw: ``out = draw()`` again at every replay."""

    __slots__ = ("draw", "out")

    def __init__(self, draw, out):
        self.draw = draw
        self.out = out


class GuardStep:
    """A tensor value that reached Python: ``how`` (item / tolist) of ``slot`` was ``seen``."""

    __slots__ = ("how", "seen", "slot", "where")

    def __init__(self, slot, how, seen, where):
        self.slot = slot
        self.how = how
        self.seen = seen
        self.where = where


def slots_read(step):
    """The slots a step reads."""
    if isinstance(step, OpStep):
        return step.inputs
    if isinstance(step, GuardStep):
        return (step.slot,)
    return ()


class Tracer:
    """The slots and steps of one traced call (forward, then each output's backward)."""

    def __init__(self):
        self.kinds = []  # slot -> one of ARGUMENT, CAPTURED, ...
        self.values = []  # slot -> the array (or number) it held while traced
        self.captured = {}  # slot -> the captured Tensor
        self.arguments = {}  # slot -> position of the argument
        self.by_tensor = {}  # id(Tensor) -> (slot, its array then)
        self.by_array = {}  # id(array) -> slot
        self.watched = []  # (tensor, version counter, version, array): no in-place write, no .data swap
        self.keep = []  # everything whose id() is a key above stays alive while tracing
        self.steps = []
        self.broken = None
        self.guards = 0

    # ---- slots ---------------------------------------------------------------

    def new_slot(self, kind, value):
        self.kinds.append(kind)
        self.values.append(value)
        return len(self.kinds) - 1

    def bind_tensor(self, tensor, slot):
        data = tensor._data
        self.by_tensor[id(tensor)] = (slot, data)
        self.by_array[id(data)] = slot
        self.keep.append(tensor)
        self.watched.append((tensor, tensor._version_counter, tensor._version_counter[0], data))

    def argument(self, tensor, position):
        slot = self.new_slot(ARGUMENT, tensor._data)
        self.arguments[slot] = position
        self.bind_tensor(tensor, slot)
        return slot

    def cotangent(self, tensor):
        slot = self.new_slot(COTANGENT, tensor._data)
        self.bind_tensor(tensor, slot)
        return slot

    def slot_of(self, value, unknown_kind=CAPTURED):
        """The slot of an op's operand: a known tensor, a tensor on a known array (``.data``,
        ``detach()``), a new captured tensor, or a constant."""
        if isinstance(value, Tensor):
            known = self.by_tensor.get(id(value))
            data = value._data
            if known is not None and known[1] is data:
                return known[0]
            slot = self.by_array.get(id(data))
            if slot is None:
                slot = self.new_slot(unknown_kind, data)
                if unknown_kind == CAPTURED:
                    self.captured[slot] = value
            self.bind_tensor(value, slot)
            return slot
        self.keep.append(value)
        return self.new_slot(CONSTANT, value)

    # ---- the hooks -------------------------------------------------------------

    def on_op(self, op, inputs, arrays, params, result):
        if self.broken is not None:
            return
        if op.extra_outputs:
            self.broken = f"op {op.name} returns extra outputs (indices), which compiled plans do not replay"
            return
        if params and _holds_arrays(params):
            self.broken = f"op {op.name} is indexed by a tensor (its values choose the elements)"
            return
        unknown = CONSTANT if self.phase_backward else CAPTURED
        by_tensor = self.by_tensor
        slots = []
        first = None
        for i, value in enumerate(inputs):
            if isinstance(value, Tensor):
                if first is None:
                    first = value._data
                known = by_tensor.get(id(value))
                if known is not None and known[1] is value._data:
                    slots.append(known[0])  # the common case, without a call
                else:
                    slots.append(self.slot_of(value, unknown))
            else:
                slots.append(self.slot_of(arrays[i]))
        data = result._data
        out = self.new_slot(STEP, data)
        self.bind_tensor(result, out)
        xp = backend.numpy if type(first) is backend.ndarray else backend.namespace_of(first)
        self.steps.append(OpStep(op, tuple(slots), params, out, data, xp))

    def on_value(self, tensor, how):
        if self.broken is not None:
            return
        if how == "numpy":
            self.broken = "a tensor was read as an array (numpy()); its uses cannot be guarded"
            return
        if how == "copy":
            self.broken = "a tensor's values were copied into a new tensor (engine.tensor(t)); use t.clone()"
            return
        data = tensor._data
        if how == "item":
            if data.size != 1:
                return  # item() raises: the eager call reports it
            seen = data.reshape(()).item()
        else:
            seen = backend.to_numpy(data).tolist()
        slot = self.slot_of(tensor)
        self.guards += 1
        self.steps.append(GuardStep(slot, how, seen, f"{how}() #{self.guards} (after {len(self.steps)} steps)"))

    def on_random(self, sample, draw):
        if self.broken is not None:
            return
        slot = self.new_slot(RANDOM, sample)
        self.by_array[id(sample)] = slot
        self.keep.append(sample)
        self.steps.append(RandomStep(draw, slot))

    phase_backward = False

    # ---- after the call ------------------------------------------------------------

    def check_unchanged(self):
        """A graph break when a traced tensor was written in place or had its ``.data`` replaced."""
        if self.broken is not None:
            return
        for tensor, counter, version, data in self.watched:
            if counter[0] != version:
                self.broken = f"in-place op on a traced tensor of shape {tuple(data.shape)}"
                return
            if tensor._data is not data:
                self.broken = f"a traced tensor of shape {tuple(data.shape)} had its .data replaced"
                return


def _holds_arrays(params):
    for value in params.values():
        if backend.is_array(value) or isinstance(value, Tensor):
            return True
        if isinstance(value, (tuple, list)) and any(backend.is_array(v) or isinstance(v, Tensor) for v in value):
            return True
    return False


# ---- the hooks, installed while any tracer is active ---------------------------------


def _on_op(op, inputs, arrays, params, result):
    tracer = _active.get()
    if tracer is not None:
        tracer.on_op(op, inputs, arrays, params, result)


def _on_value(tensor, how):
    tracer = _active.get()
    if tracer is not None:
        tracer.on_value(tensor, how)


def _on_random(sample, draw):
    tracer = _active.get()
    if tracer is not None:
        tracer.on_random(sample, draw)


class recording:  # noqa: N801 - used as a context manager, like no_grad
    """Make ``tracer`` the current one (hooks installed while any tracer is active)."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.token = None

    def __enter__(self):
        global _installed
        with _install_lock:
            _installed += 1
            function.trace_hook = _on_op
            tensor_module.value_hook = _on_value
            creation.random_hook = _on_random
        self.token = _active.set(self.tracer)
        return self.tracer

    def __exit__(self, *exc):
        global _installed
        _active.reset(self.token)
        with _install_lock:
            _installed -= 1
            if not _installed:
                function.trace_hook = None
                tensor_module.value_hook = None
                creation.random_hook = None
        return False


class paused:  # noqa: N801
    """No tracer in this context inside the block (a compiled call's own bookkeeping)."""

    def __enter__(self):
        self.token = _active.set(None)

    def __exit__(self, *exc):
        _active.reset(self.token)
        return False
