"""Buffers a plan owns: steps that write into them (ufunc ``out=``), and the pool that keeps them.

In plans with large buffers, a step whose forward is exactly one ufunc call on
its inputs (found by running the forward once, at build, on a stand-in for
``xp`` that records the calls), and whose result dies inside the plan (not an
output, not read by the backward, not aliased by a reader's view), writes into
a buffer of the plan's pool. A buffer freed by one step's last reader serves a
later step of the same shape and dtype, and the pool serves the next replay:
large workloads stop paying for fresh pages, as caching allocators do.
"""

from __future__ import annotations

from engine import backend
from engine.compiler.tracer import OpStep, slots_read


class _UfuncProbe:
    """Stands in for ``xp`` while an op's forward runs once, when a plan is built: records which
    functions it calls, and marks anything that is not a ufunc."""

    def __init__(self, xp):
        self.xp = xp
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(self.xp, name)
        if not (callable(attr) and hasattr(attr, "nin") and hasattr(attr, "nout")):
            self.calls.append(None)
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            self.calls.append((attr, args, kwargs, result))
            return result

        return call


def single_ufunc(step, values):
    """The ufunc when ``step``'s forward is exactly ``ufunc(*inputs)`` returning an array of the
    step's dtype (so ``ufunc(*inputs, out=buffer)`` computes the same, into a buffer); else None."""
    if not isinstance(step, OpStep) or step.variadic:
        return None
    inputs = [values[i] for i in step.inputs]
    probe = _UfuncProbe(step.xp)
    try:
        result = step.op.forward(probe, *inputs, **step.params)
    except Exception:  # a forward that needs more than xp's ufuncs is simply not pooled
        return None
    if len(probe.calls) != 1 or probe.calls[0] is None:
        return None
    ufunc, args, kwargs, produced = probe.calls[0]
    if kwargs or ufunc.nout != 1 or produced is not result or len(args) != len(inputs):
        return None
    if any(a is not b for a, b in zip(args, inputs)):
        return None
    if not backend.is_array(result) or not result.ndim or type(result) is not step.array_type:
        return None
    return ufunc if result.dtype == step.dtype else None


def ufunc_runner(ufunc, ins, out, buffer=None):
    """The closure that runs a step that is one ufunc call: into the buffer in slot ``buffer`` (a
    pooled step), or into a new array."""
    if buffer is None:
        if len(ins) == 1:
            (a,) = ins

            def run(env):
                env[out] = ufunc(env[a])
        elif len(ins) == 2:
            a, b = ins

            def run(env):
                env[out] = ufunc(env[a], env[b])
        else:
            def run(env):
                env[out] = ufunc(*[env[i] for i in ins])
    elif len(ins) == 1:
        (a,) = ins

        def run(env):
            env[out] = ufunc(env[a], out=env[buffer])
    elif len(ins) == 2:
        a, b = ins

        def run(env):
            env[out] = ufunc(env[a], env[b], out=env[buffer])
    else:
        def run(env):
            env[out] = ufunc(*[env[i] for i in ins], out=env[buffer])
    return run


def _aliased_by_a_reader(slot, readers, values):
    """Whether a step that reads ``slot`` returned (a view of) its array: a buffer behind it could
    be overwritten while the view is still used."""
    value = values[slot]
    for step in readers.get(slot, ()):
        out = values[step.out] if isinstance(step, OpStep) else None
        if out is value or (backend.is_array(out) and backend.aliases(out, value)):
            return True
    return False


def assign_buffers(steps, frees, keep, values, base):
    """``(pooled, specs)``: id(step) -> (ufunc, buffer slot) for each step that writes into a
    buffer, a buffer being reused once its slot's last reader ran; and per buffer (from slot
    ``base`` on) its shape, dtype and namespace."""
    specs = []
    readers = {}
    for step in steps:
        for slot in slots_read(step):
            readers.setdefault(slot, []).append(step)
    # A kept result (a gradient, an output) that is one ufunc call writes over an input of its
    # shape that dies there and that a one-ufunc step of this plan made fresh (not pooled): as
    # eager adds into a buffer it owns, the result is then a fresh array, and no pooled one.
    producers = {step.out: step for step in steps if isinstance(step, OpStep)}
    into_input = {}  # id(kept step) -> (ufunc, the input slot it writes over)
    fresh_inputs = set()  # ids of the steps whose results are written over: never pooled
    for step, freed in zip(steps, frees):
        if not isinstance(step, OpStep) or step.out not in keep:
            continue
        ufunc = single_ufunc(step, values)
        if ufunc is None:
            continue
        expected = values[step.out]
        for slot in step.inputs:
            value, producer = values[slot], producers.get(slot)
            if slot in freed and slot not in keep and producer is not None and backend.is_array(value) \
                    and value.shape == expected.shape and value.dtype == expected.dtype \
                    and id(producer) not in into_input and single_ufunc(producer, values) is not None \
                    and not _aliased_by_a_reader(slot, readers, values):
                into_input[id(step)] = (ufunc, slot)
                fresh_inputs.add(id(producer))
                break
    idle = {}  # (shape, dtype, array type) -> buffer slots free for reuse
    owner = {}  # slot -> the buffer slot holding its value
    kinds = {}  # buffer slot -> its key in ``idle``
    pooled = {}
    for step, freed in zip(steps, frees):
        out = getattr(step, "out", None)
        if id(step) in into_input:
            pooled[id(step)] = into_input[id(step)]
        elif isinstance(step, OpStep) and out not in keep and id(step) not in fresh_inputs \
                and not _aliased_by_a_reader(out, readers, values):
            ufunc = single_ufunc(step, values)
            if ufunc is not None:
                # The inputs this step reads last give their buffers back first: a ufunc may write
                # over an input of its own shape (numpy computes it element by element, the same
                # floats), and a buffer just read is still in cache.
                for slot in freed:
                    buffer = owner.pop(slot, None)
                    if buffer is not None:
                        idle.setdefault(kinds[buffer], []).append(buffer)
                value = values[out]
                key = (value.shape, value.dtype, step.array_type)
                spare = idle.get(key)
                if spare:
                    buffer = spare.pop()
                else:
                    buffer = base + len(specs)
                    specs.append((value.shape, value.dtype, step.xp))
                    kinds[buffer] = key
                owner[out] = buffer
                pooled[id(step)] = (ufunc, buffer)
        for slot in freed:
            buffer = owner.pop(slot, None)
            if buffer is not None:
                idle.setdefault(kinds[buffer], []).append(buffer)
    return pooled, specs


class BufferPool:
    """Sets of buffers for one ``Steps``: a replay takes a set (or allocates one) and gives it
    back when done, so concurrent replays never share a buffer."""

    def __init__(self, specs):
        self.specs = specs
        self.sets = []
        self.made = set()  # ids of every buffer made (the pool keeps them all alive)

    def take(self):
        if self.sets:
            try:
                return self.sets.pop()
            except IndexError:  # another thread took the last one
                pass
        buffers = [xp.empty(shape, dtype) for shape, dtype, xp in self.specs]
        self.made.update(map(id, buffers))
        return buffers

    def holds(self, array):
        """Whether ``array`` is one of this pool's buffers."""
        return id(array) in self.made

    def give_back(self, buffers):
        self.sets.append(buffers)
