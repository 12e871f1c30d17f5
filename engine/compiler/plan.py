"""Plans: a traced call as a list of steps on plain arrays, and how they replay.

A plan's values live in one list, the *environment*, indexed by slot. A
replay copies the plan's template (constants filled in), puts the arguments'
and captured tensors' arrays in their slots, and runs the steps in order.
Each step is a closure made once, when the plan is built, that reads its
input slots, calls the op's forward on arrays with its params bound, and
stores the result: no Tensors, no graph nodes, no per-op dispatch. The result
dtype is the one ``apply`` gave while tracing (PyTorch's promotion), and the
forward is the table's own, so a replay computes what the eager call computes,
bit for bit.

A guard step recomputes a value that reached Python while tracing and raises
``GuardFailedError`` when it differs; a random step draws again. Each slot's last
use is known: in plans with large buffers, a slot is dropped as soon as no
later step (and no backward) reads it, so memory is returned early.

Besides the array replay, a plan can run its steps on Tensors through
``apply`` (``run_on_tensors``): what ``create_graph=True`` and batched
cotangents use, since they need a graph rather than arrays.
"""

from __future__ import annotations

import collections
import copy

from engine import backend
from engine.autograd.function import apply
from engine.compiler.buffers import BufferPool, assign_buffers, single_ufunc, ufunc_runner
from engine.compiler.tracer import ARGUMENT, CAPTURED, CONSTANT, GuardStep, OpStep, RandomStep, slots_read
from engine.op import broadcast_size, numel
from engine.tensor import Tensor

# Plans whose largest buffer has at least this many elements drop each buffer after its last
# use; below it, the bookkeeping costs more than the memory it returns.
LARGE_BUFFER = 1 << 16


class GuardFailedError(Exception):
    """A guarded value differs on replay: this variant does not apply to these inputs."""

    def __init__(self, where):
        super().__init__(where)
        self.where = where


def _op_runner(step):
    """The closure that runs one op step on the environment."""
    xp = step.xp
    array_type = step.array_type
    forward = step.op.forward
    params = step.params
    out = step.out
    dtype = step.dtype
    ins = step.inputs

    def finish(result):
        if type(result) is not array_type and not backend.is_array(result):
            result = xp.asarray(result)  # a full reduction's scalar, as apply's _forward does
        if result.dtype != dtype:
            result = result.astype(dtype)
        return result

    if step.variadic:
        def run(env):
            env[out] = finish(forward(xp, [env[i] for i in ins], **params))
    elif len(ins) == 1:
        (a,) = ins
        if params:
            def run(env):
                result = forward(xp, env[a], **params)
                env[out] = result if type(result) is array_type and result.dtype == dtype else finish(result)
        else:
            def run(env):
                result = forward(xp, env[a])
                env[out] = result if type(result) is array_type and result.dtype == dtype else finish(result)
    elif len(ins) == 2:
        a, b = ins
        if params:
            def run(env):
                result = forward(xp, env[a], env[b], **params)
                env[out] = result if type(result) is array_type and result.dtype == dtype else finish(result)
        else:
            def run(env):
                result = forward(xp, env[a], env[b])
                env[out] = result if type(result) is array_type and result.dtype == dtype else finish(result)
    else:
        def run(env):
            env[out] = finish(forward(xp, *[env[i] for i in ins], **params))
    return run


def _guard_runner(step):
    slot, seen, where = step.slot, step.seen, step.where
    if step.how == "item":
        def run(env):
            if env[slot].reshape(()).item() != seen:
                raise GuardFailedError(where)
    else:
        def run(env):
            if backend.to_numpy(env[slot]).tolist() != seen:
                raise GuardFailedError(where)
    return run


def _random_runner(step):
    draw, out = step.draw, step.out

    def run(env):
        env[out] = draw()
    return run


class Steps:
    """A list of steps with their closures, ready to replay on an environment.

    With ``pool_base`` (plans with large buffers), a step whose forward is one ufunc and whose
    result dies inside the plan writes into a buffer of the plan's pool (``ufunc(..., out=)``):
    a buffer freed by one step's last reader serves a later step of the same shape, and the
    pool serves the next replay, so large workloads stop paying for fresh pages. The buffers
    live in the environment from slot ``pool_base`` on; ``buffer_specs`` says what to allocate.
    """

    def __init__(self, steps, keep_slots, size, values=None, pool_base=None):
        self.records = steps
        self.frees = _last_uses(steps, keep_slots, size)
        self.buffer_specs = []  # per pooled buffer: shape, dtype, namespace
        pooled = {}
        if pool_base is not None:
            pooled, self.buffer_specs = assign_buffers(steps, self.frees, keep_slots, values, pool_base)
        self.runners = []
        # (a kept step writing over its own input, a slot below the pool's, allocates nothing)
        self.pooled_outputs = {step.out for step in steps if id(step) in pooled and pooled[id(step)][1] >= pool_base}
        for step in steps:
            if id(step) in pooled:
                ufunc, buffer = pooled[id(step)]
                self.runners.append(ufunc_runner(ufunc, step.inputs, step.out, buffer))
            elif isinstance(step, OpStep):
                ufunc = single_ufunc(step, values) if values is not None else None
                # a forward that is one ufunc call runs as that call: no lambda, no result check
                self.runners.append(_op_runner(step) if ufunc is None else ufunc_runner(ufunc, step.inputs, step.out))
            elif isinstance(step, GuardStep):
                self.runners.append(_guard_runner(step))
            else:
                self.runners.append(_random_runner(step))

    def run(self, env, free):
        if free:
            for run, frees in zip(self.runners, self.frees):
                run(env)
                for slot in frees:
                    env[slot] = None
        else:
            for run in self.runners:
                run(env)


def _is_elementwise(step):
    """An op that combines its inputs element by element under broadcasting (add, mul, where...):
    fed an array or its broadcast view, it computes the same elements."""
    op = step.op
    return isinstance(step, OpStep) and op.broadcast and op.estimate is broadcast_size and not step.params


def _recomputed(step, inputs, values):
    """What ``step`` gives on ``inputs`` (``values`` maps slots to traced arrays), or None when it
    raises (checked once, when the plan is built)."""
    xp = step.xp
    try:
        return xp.asarray(step.op.forward(xp, *[values[i] for i in inputs], **step.params))
    except (ValueError, TypeError):
        return None


def _same_elements(result, expected, dtype):
    """Whether ``result`` is ``expected`` bit for bit, or its smaller broadcast source: every element
    of ``expected`` equals the element of ``result`` it broadcasts from, in the same dtype."""
    if result is None or result.dtype != dtype or result.ndim > expected.ndim:
        return False
    try:
        equal = result == expected  # broadcast as the readers will (NaN never equals: not elided)
    except ValueError:
        return False
    return equal.shape == expected.shape and bool(equal.all())


def elide_expansions(steps, values, keep):
    """``(steps, values)`` without the views that only broadcast an array (a reduction's vjp expands
    ``g`` to the input's shape) where every reader is elementwise and broadcasts by itself: the
    readers take the smaller array, and one step (and its view) is gone. A reader whose result is
    smaller then (``g * 2`` before it meets ``cos x``) passes the smaller result on in the same way,
    as long as that result is not kept and only elementwise steps read it: elementwise ops compute
    each element alike, so the values are the same, on fewer elements. ``values`` comes back with
    those smaller values (a copy, when any changed): what buffers are sized from."""
    if not any(isinstance(step, OpStep) and step.op.view for step in steps):
        return steps, values
    readers = {}
    for step in steps:
        for slot in slots_read(step):
            readers.setdefault(slot, []).append(step)
    replaced = {}  # id(reader) -> its copy with rewired inputs
    smaller = {}  # slot -> its value, now smaller than traced
    dropped = set()
    for step in steps:
        if not isinstance(step, OpStep) or not step.op.view or len(step.inputs) != 1 or step.out in keep:
            continue
        source, out = step.inputs[0], step.out
        small, large = values[source], values[out]
        if not backend.is_array(small) or numel(small.shape) >= numel(large.shape):
            continue
        if backend.numpy.broadcast_shapes(small.shape, large.shape) != large.shape:
            continue
        trial = _shrink(out, source, readers, replaced, smaller, values, keep)
        if trial is not None:
            clones, shrunk = trial
            replaced.update(clones)
            smaller.update(shrunk)
            dropped.add(id(step))
            readers.setdefault(source, []).extend(readers.get(out, []))
    steps = [replaced.get(id(step), step) for step in steps if id(step) not in dropped]
    if smaller:
        values = list(values)
        for slot, value in smaller.items():
            values[slot] = value
    return steps, values


def _shrink(out, source, readers, replaced, smaller, values, keep):
    """The readers of ``out`` rewired to read ``source`` instead (and so on down, for results that
    come out smaller): ``(clones, smaller values)``, or None when some reader does not allow it."""
    clones = {}
    shrunk = {}

    def value_of(slot):
        return shrunk.get(slot, smaller.get(slot, values[slot]))

    pending = [(out, source)]
    while pending:
        slot, instead = pending.pop()
        users = readers.get(slot, [])
        if not users:
            return None
        for user in users:
            current = clones.get(id(user)) or replaced.get(id(user), user)
            if not _is_elementwise(current):
                return None
            inputs = tuple(instead if i == slot else i for i in current.inputs)
            lookup = {i: value_of(i) for i in inputs}
            result = _recomputed(current, inputs, lookup)
            expected = values[current.out]
            if not _same_elements(result, expected, current.dtype):
                return None
            clone = copy.copy(current)
            clone.inputs = inputs
            clones[id(user)] = clone
            if result.shape != expected.shape:  # smaller: its readers must take it as it is
                if current.out in keep or not result.ndim:
                    return None
                shrunk[current.out] = result
                pending.append((current.out, current.out))
    return clones, shrunk


def _last_uses(steps, keep_slots, size):
    """Per step, the slots no later step reads (and that are not kept): free after it."""
    last = [None] * size
    for index, step in enumerate(steps):
        for slot in slots_read(step):
            last[slot] = index
    frees = [[] for _ in steps]
    for slot, index in enumerate(last):
        if index is not None and slot not in keep_slots:
            frees[index].append(slot)
    return [tuple(f) for f in frees]


class BackwardPlan:
    """One output's backward: from its cotangent and the forward's environment to each target's
    gradient slot (None: the target gets no gradient from this output). Its slots follow the
    forward's (the forward's template holds its constants); its pool's buffers follow all."""

    def __init__(self, steps, cotangent, grad_slots, reads, values, free):
        self.cotangent = cotangent
        self.grad_slots = grad_slots
        self.reads = reads  # forward slots this backward reads
        keep = set(grad_slots) - {None}
        size = len(values)
        self.size = size
        steps, values = elide_expansions(steps, values, keep)
        self.steps = Steps(steps, keep, size, values, size if free else None)
        self.free = free
        self.pool = BufferPool(self.steps.buffer_specs) if self.steps.buffer_specs else None
        # Per target: whether its gradient is computed here by a step that allocates its result
        # (not a pooled buffer, not a value from outside, not shared with another target). Such a
        # result may still turn out to be an input as is (checked per call: ``owned_gradients``).
        computed = {step.out for step in self.steps.records if isinstance(step, OpStep)} - self.steps.pooled_outputs
        self.fresh_results = [slot is not None and slot in computed and grad_slots.count(slot) == 1
                              for slot in grad_slots]

    def run(self, forward_env, g):
        env = forward_env[: self.size]  # a list of its own: the forward's stays whole for another backward
        env[self.cotangent] = g
        pool = self.pool
        if pool is None:
            self.steps.run(env, self.free)
        else:
            buffers = pool.take()
            env.extend(buffers)
            try:
                self.steps.run(env, self.free)
            finally:
                pool.give_back(buffers)
        return [None if slot is None else env[slot] for slot in self.grad_slots]


class Plan:
    """One traced variant of a signature: forward steps, the outputs, and (when the call records
    a graph) one backward plan per differentiable output."""

    def __init__(self, tracer, argument_slots, output_slots, structure, differentiable, targets,
                 backward_plans, device):
        self.argument_slots = argument_slots  # per flattened argument: its slot, or None (not a tensor)
        self.output_slots = output_slots
        self.output_shapes = [tracer.values[slot].shape for slot in output_slots]
        self.structure = structure  # "tensor", "tuple" or "list"
        self.differentiable = differentiable  # per output: does it get a grad_fn
        self.targets = targets  # the slots (arguments and captured) gradients flow to, in edge order
        self.backward_plans = backward_plans  # per output: a BackwardPlan or None
        self.device = device  # None on the host; else the device the replay runs on
        self.captured = [(slot, tensor, tensor._data.shape, tensor._data.dtype, tensor._requires_grad,
                          type(tensor._data)) for slot, tensor in tracer.captured.items()]
        forward = list(tracer.forward_steps)
        self.records = forward
        self.random_slots = tuple(s.out for s in forward if isinstance(s, RandomStep))
        size = len(tracer.kinds)  # the backward's slots too: its constants live in this template
        self.size = size
        self.template = [value if kind == CONSTANT else None for kind, value in zip(tracer.kinds, tracer.values)]
        self.saved_reads = tuple(sorted({slot for plan in backward_plans if plan for slot in plan.reads}))
        self.output_dtypes = [tracer.values[slot].dtype for slot in output_slots]
        # Where each target's tensor comes from at a call: an argument's position, or the captured Tensor.
        self.target_sources = [tracer.arguments[slot] if slot in tracer.arguments else tracer.captured[slot]
                               for slot in targets]
        self.target_shapes = tuple(tracer.values[slot].shape for slot in targets)
        # Per output: the arguments (positions) and captured tensors whose values its backward
        # reads; their versions are checked at backward, as eager checks what a node saved.
        self.checked_sources = [
            () if plan is None else tuple(
                tracer.arguments[slot] if slot in tracer.arguments else tracer.captured[slot]
                for slot in plan.reads if slot in tracer.arguments or slot in tracer.captured)
            for plan in backward_plans
        ]
        self._read_positions = tuple(tracer.arguments[slot] for slot in range(tracer.forward_size)
                                     if slot in tracer.arguments)
        keep = set(output_slots) | set(self.saved_reads) | set(self.random_slots)
        forward_size = tracer.forward_size
        shapes = [v.shape for v in tracer.values[:forward_size] if hasattr(v, "shape")]
        self.max_elements = max((numel(s) for s in shapes), default=0)
        self.total_elements = sum(numel(s) for s in shapes)
        self.free = self.max_elements >= LARGE_BUFFER
        steps, values = elide_expansions(forward, tracer.values, keep)
        self.steps = Steps(steps, keep, size, values, size if self.free else None)
        self.pool = BufferPool(self.steps.buffer_specs) if self.steps.buffer_specs else None
        self.n_steps = len(forward) + sum(len(p.steps.records) for p in backward_plans if p)
        self.peak_live_elements = self._peak_live(tracer)
        self.input_elements = sum(numel(getattr(tracer.values[s], "shape", ())) for s in range(forward_size)
                                  if tracer.kinds[s] in (ARGUMENT, CAPTURED))
        # The table ops the forward runs, by name, as eager mode would run them (for op counts).
        self.op_counts = collections.Counter(step.op.name for step in forward if isinstance(step, OpStep))

    def _peak_live(self, tracer):
        live = {s: numel(getattr(tracer.values[s], "shape", ())) for s in range(tracer.forward_size)
                if tracer.kinds[s] in (ARGUMENT, CAPTURED, CONSTANT)}
        peak = sum(live.values())
        for step, frees in zip(self.records, self.steps.frees):
            out = getattr(step, "out", None)
            if out is not None:
                live[out] = numel(getattr(tracer.values[out], "shape", ()))
            peak = max(peak, sum(live.values()))
            if self.free:
                for slot in frees:
                    live.pop(slot, None)
        return peak

    def cost(self):
        """What a budget needs before replaying: steps, and elements of the largest buffer, of all
        buffers together, of the most that are alive at once, and of those the inputs (arguments
        and captured tensors, counted in the peak) hold."""
        return {"steps": self.n_steps, "max_buffer_elements": self.max_elements,
                "total_elements": self.total_elements, "peak_live_elements": self.peak_live_elements,
                "input_elements": self.input_elements}

    def read_tensors(self, flat):
        """The tensors a call reads: its tensor arguments and the captured tensors."""
        return [flat[i] for i in self._read_positions] + [tensor for _, tensor, *_ in self.captured]

    def captured_matches(self):
        """None when every captured tensor still has its traced shape, dtype, device and
        requires_grad; else what changed."""
        for slot, tensor, shape, dtype, requires_grad, array_type in self.captured:
            data = tensor._data
            if data.shape != shape or data.dtype != dtype or type(data) is not array_type:
                return f"captured tensor (slot {slot}) changed shape, dtype or device"
            if tensor._requires_grad is not requires_grad:
                return f"captured tensor (slot {slot}) changed requires_grad"
        return None

    def replay(self, arrays):
        """The forward on arrays: the environment after the last step (raises GuardFailedError)."""
        env = self.template[:]
        for slot, array in zip(self.argument_slots, arrays):
            if slot is not None:
                env[slot] = array
        for slot, tensor, *_ in self.captured:
            env[slot] = tensor._data
        if self.device is not None:
            with backend.on_device(self.device):
                self._run(env)
        else:
            self._run(env)
        return env

    def _run(self, env):
        pool = self.pool
        if pool is None:
            self.steps.run(env, self.free)
            return
        buffers = pool.take()
        env.extend(buffers)
        try:
            self.steps.run(env, self.free)
        finally:
            del env[self.size:]
            pool.give_back(buffers)

    def run_on_tensors(self, arguments, random_values):
        """The forward again on Tensors through ``apply`` (recorded when grad mode is on), with
        the arguments' and captured Tensors and the call's own random draws: the graph that
        ``create_graph=True`` and batched cotangents differentiate."""
        env = [None] * len(self.template)
        for slot, value in enumerate(self.template):
            if value is not None:
                env[slot] = value if not backend.is_array(value) else Tensor._make(value)
        for slot, tensor in zip(self.argument_slots, arguments):
            if slot is not None:
                env[slot] = tensor
        for slot, tensor, *_ in self.captured:
            env[slot] = tensor
        for slot, value in zip(self.random_slots, random_values):
            env[slot] = Tensor._make(value)
        for step in self.records:
            if isinstance(step, OpStep):
                if step.variadic:
                    env[step.out] = apply(step.op, ([env[i] for i in step.inputs],), step.params)
                else:
                    env[step.out] = apply(step.op, tuple(env[i] for i in step.inputs), step.params)
        return env
