"""``engine.compile``: a function (or module) that traces itself once per signature and replays.

A call goes one of three ways, and ``explain()`` says which and why:

- *replayed*: a plan of this signature applies (its captured tensors kept
  their shapes, and every guard saw the value it saw while traced): the
  forward runs on arrays, and outputs that need gradients get one
  ``CompiledFunctionBackward`` node, whose backward replays the recorded
  backward plan;
- *recompiled*: no plan applies (a new signature, a guard that failed, a
  captured tensor that changed shape): the call runs eagerly while traced,
  and the trace becomes a new variant, at most ``max_variants`` per signature;
- *eager*: the function cannot be replayed faithfully (a graph break, found
  while tracing), the variant bound is reached, or something must see every op
  (op observers: the profiler; forward-mode AD; an enclosing trace). The eager
  call is the reference: never a wrong result.

An op observer that can bound a replay without seeing its ops (the service's
budget and op tracking) says so with a ``replay(cost)`` method: while every
active observer has one, calls still replay, and each observer's ``replay`` is
called with the ``Plan`` before the replay runs (its ``cost()`` and ``op_counts``
say what the replay will do; it may raise, to refuse it, as it would refuse an
op) and with None after it ran.

The backward plan is recorded the way the forward is. While tracing, the
eager graph is differentiated once more with ``create_graph=True`` (the vjp
rules are table ops then), with a cotangent as the plan's input, without
recording a graph. ``create_graph=True`` through a compiled node, and
batched cotangents (Jacobians), run the plan's steps again on Tensors
(``Plan.run_on_tensors``) and differentiate that graph: exact higher-order
derivatives, with the call's own random draws.
"""

from __future__ import annotations

import collections
import functools
import threading

from engine import backend
from engine.autograd import function, grad_mode
from engine.autograd.backward import _BatchedGrad, run_backward
from engine.autograd.graph import Node, accumulator
from engine.compiler import guards, tracer
from engine.compiler.plan import LARGE_BUFFER, BackwardPlan, GuardFailedError, Plan
from engine.compiler.tracer import ARGUMENT, CAPTURED, CONSTANT, RANDOM, STEP, GuardStep, RandomStep, Tracer
from engine.op import numel
from engine.tensor import Tensor

_grad_enabled = grad_mode._grad_enabled.get
HISTORY_LENGTH = 256


class CompiledFunctionBackward(Node):
    """The one backward node of a compiled call's output (PyTorch's name)."""

    __slots__ = ()

    @property
    def plan(self):
        """The recorded variant (``Plan``) whose replay (or trace) made this node."""
        return self.params[0].plan


class CallRecord(collections.namedtuple("CallRecord", "number kind reason")):
    """How one call ran: ``kind`` is "replayed", "recompiled" or "eager"."""

    def __str__(self):
        return f"call {self.number}: {self.kind}" + (f" ({self.reason})" if self.reason else "")


class _Entry:
    """One signature: its variants, or why it runs eagerly."""

    __slots__ = ("eager_reason", "variants")

    def __init__(self):
        self.variants = []
        self.eager_reason = None


class CompiledFunction:
    """What ``engine.compile(fn_or_module)`` returns: call it like ``fn``."""

    def __init__(self, fn, max_variants=8, fullgraph=False, disable=False):
        if not callable(fn):
            raise TypeError(f"engine.compile expects a function or an nn.Module, got {type(fn).__name__}")
        if not isinstance(max_variants, int) or max_variants < 1:
            raise ValueError(f"max_variants must be a positive int, got {max_variants!r}")
        self._orig_mod = fn
        self.max_variants = max_variants
        self.fullgraph = fullgraph
        self.disable = disable
        self._cache = {}
        self._calls = 0
        self._history = collections.deque(maxlen=HISTORY_LENGTH)  # (call number, kind, reason)
        self._thread_last = threading.local()  # .record: this thread's latest call (last_call_here)
        modules = getattr(fn, "modules", None)
        self._modules = list(modules()) if callable(modules) and hasattr(fn, "_parameters") else None
        functools.update_wrapper(self, fn, updated=())

    def __getattr__(self, name):
        # A compiled module still answers for the module (parameters(), train(), state_dict()...).
        return getattr(self.__dict__["_orig_mod"], name)

    def __repr__(self):
        return f"CompiledFunction({self._orig_mod!r})"

    # ---- calls -----------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        self._calls += 1
        observers = function.op_observers
        if (self.disable or (observers and not _observers_bound_replays(observers))
                or function.forward_ad_hook is not None or tracer.current()):
            return self._eager(self._eager_reason(), args, kwargs)
        if kwargs:
            names = tuple(sorted(kwargs))
            flat = args + tuple(kwargs[n] for n in names)
        else:
            names = ()
            flat = args
        try:
            key = guards.signature(flat, names)
        except guards.UnsupportedArgumentError as error:
            return self._eager(str(error), args, kwargs)
        if self._modules is not None:
            key = (*key, guards.module_state(self._modules))
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = _Entry()
            return self._trace(entry, args, kwargs, flat, _NewSignature(key))
        if entry.eager_reason is not None:
            return self._eager(entry.eager_reason, args, kwargs)
        failure = None
        for plan in entry.variants:
            changed = plan.captured_matches()
            if changed is not None:
                failure = changed
                continue
            if observers:
                for observer in observers:
                    observer.replay(plan)
            try:
                result = _replay(plan, flat)
            except GuardFailedError as error:
                failure = f"guard failed at {error.where}"
                continue
            if observers:
                for observer in observers:
                    observer.replay(None)
            self._record("replayed", None)
            return result
        if len(entry.variants) >= self.max_variants:
            entry.eager_reason = (f"max_variants={self.max_variants} variants of this signature are recorded "
                                  f"and none applies (last: {failure})")
            return self._eager(entry.eager_reason, args, kwargs)
        return self._trace(entry, args, kwargs, flat, failure)

    def _eager_reason(self):
        if self.disable:
            return "compilation disabled"
        if function.op_observers:
            return "op observers are active (the profiler): every op runs eagerly so they see it"
        if function.forward_ad_hook is not None:
            return "forward-mode AD is active (dual tensors)"
        if tracer.current() is not None:
            return "called inside another traced function: its ops are recorded there"
        return None

    def _eager(self, reason, args, kwargs):
        self._record("eager", reason)
        return self._orig_mod(*args, **kwargs)

    def _record(self, kind, reason):
        record = (self._calls, kind, reason)
        self._history.append(record)
        self._thread_last.record = record

    def _trace(self, entry, args, kwargs, flat, why):
        recording = Tracer()
        argument_slots = []
        seen = set()
        duplicate = False
        for position, value in enumerate(flat):
            if isinstance(value, Tensor):
                duplicate = duplicate or id(value) in seen
                seen.add(id(value))
                argument_slots.append(recording.argument(value, position))
            else:
                argument_slots.append(None)
        hooks_before = [_hook_count(v) for v in flat if isinstance(v, Tensor)]
        try:
            with tracer.recording(recording):
                result = self._orig_mod(*args, **kwargs)
        except BaseException:
            if not entry.variants:
                self._cache.pop(next((k for k, e in self._cache.items() if e is entry), None), None)
            raise
        if duplicate:
            recording.broken = recording.broken or "one tensor passed as two arguments"
        if recording.broken is None and hooks_before != [_hook_count(v) for v in flat if isinstance(v, Tensor)]:
            recording.broken = "a hook was registered on an argument inside the function"
        plan = _build_plan(recording, result, flat, argument_slots)
        if plan is None:
            entry.eager_reason = f"graph break: {recording.broken}"
            if self.fullgraph:
                raise RuntimeError(f"engine.compile(fullgraph=True): {entry.eager_reason}")
            self._record("eager", entry.eager_reason)
        else:
            entry.variants.append(plan)
            self._record("recompiled", why)
            if plan.targets:
                # The traced call's outputs take the compiled node too: its backward replays the
                # recorded plan on the values the trace computed (the eager graph is dropped).
                env = plan.template[:]
                env[: recording.forward_size] = recording.values[: recording.forward_size]
                return _results(plan, env, flat)
        return result

    # ---- introspection -----------------------------------------------------------

    @property
    def history(self):
        """The recent calls, oldest first, as CallRecords."""
        return [_call_record(*entry) for entry in self._history]

    @property
    def last_call(self):
        """The CallRecord of the latest call (None before the first)."""
        return _call_record(*self._history[-1]) if self._history else None

    @property
    def last_call_here(self):
        """The CallRecord of this thread's latest call (None before its first): what a server
        running one function in several threads at once reads after its own call."""
        record = getattr(self._thread_last, "record", None)
        return _call_record(*record) if record is not None else None

    def explain(self) -> str:
        """One line per recent call: replayed, recompiled (why) or eager (why)."""
        return "\n".join(str(record) for record in self.history)

    def plans(self, *args, **kwargs):
        """The plans recorded for the signature of these arguments (no call is made)."""
        names = tuple(sorted(kwargs))
        flat = args + tuple(kwargs[n] for n in names)
        key = guards.signature(flat, names)
        if self._modules is not None:
            key = (*key, guards.module_state(self._modules))
        entry = self._cache.get(key)
        return list(entry.variants) if entry is not None else []

    def cost(self, *args, **kwargs):
        """What a budget needs to bound a replay with these arguments before running it: the
        largest ``Plan.cost()`` among this signature's variants (None when nothing is recorded)."""
        costs = [plan.cost() for plan in self.plans(*args, **kwargs)]
        if not costs:
            return None
        return {name: max(c[name] for c in costs) for name in costs[0]}


def _observers_bound_replays(observers):
    """Whether every active op observer can bound a replay from its plan (see the module docstring)."""
    return all(hasattr(observer, "replay") for observer in observers)
class _NewSignature:
    """The reason of a first call, described only when asked (``explain``): describing a signature
    costs more than a small call's trace."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __str__(self):
        return f"new signature {guards.describe(self.key)}"


def _call_record(number, kind, reason):
    return CallRecord(number, kind, None if reason is None else str(reason))


def _hook_count(tensor):
    node = tensor.grad_fn
    return (len(tensor._hooks or ()), len(node.pre_hooks or ()) if node is not None else 0, tensor._retains_grad)


# ---- building a plan from a trace -------------------------------------------------------------


def _outputs(result):
    if isinstance(result, Tensor):
        return "tensor", [result]
    if isinstance(result, (tuple, list)) and result and all(isinstance(t, Tensor) for t in result):
        return type(result).__name__, list(result)
    return None, None


def _build_plan(recording, result, flat, argument_slots):
    """The plan of a finished trace, or None (``recording.broken`` says why)."""
    recording.forward_steps = list(recording.steps)
    recording.forward_size = len(recording.kinds)
    recording.check_unchanged()
    if recording.broken is not None:
        return None
    structure, outputs = _outputs(result)
    if structure is None:
        recording.broken = f"the function returns {type(result).__name__}, not a tensor or a tuple of tensors"
        return None
    output_slots = []
    for out in outputs:
        known = recording.by_tensor.get(id(out))
        if known is None or known[1] is not out._data or recording.kinds[known[0]] not in (STEP, RANDOM):
            recording.broken = "an output is not computed by the function's ops (an input or a constant returned as is)"
            return None
        base = out._base
        if base is not None:
            base_slot = recording.by_tensor.get(id(base))
            if base_slot is not None and recording.kinds[base_slot[0]] in (ARGUMENT, CAPTURED):
                recording.broken = "an output is a view of an input or a captured tensor"
                return None
        output_slots.append(known[0])
    if len(set(output_slots)) != len(output_slots):
        recording.broken = "one tensor is returned twice"
        return None
    for tensor, *_ in recording.watched:
        node = tensor.grad_fn
        made_here = recording.kinds[recording.by_tensor[id(tensor)][0]] == STEP
        if made_here and (tensor._hooks or tensor._retains_grad
                          or (node is not None and (node.pre_hooks or node.retained is not None))):
            recording.broken = "a hook or retain_grad() was used inside the function"
            return None
    first = next((v._data for v in flat if isinstance(v, Tensor)), outputs[0]._data)
    device = None if type(first) is backend.ndarray else backend.device_of(first)
    differentiable = [bool(out._requires_grad and out.grad_fn is not None) for out in outputs]
    targets = []
    backward_plans = [None] * len(outputs)
    if any(differentiable):
        targets = [slot for slot in range(recording.forward_size) if recording.kinds[slot] in (ARGUMENT, CAPTURED)
                   and _target_tensor(recording, flat, slot)._requires_grad]
        if not _trace_backward(recording, outputs, differentiable, targets, flat, backward_plans):
            return None
    return Plan(recording, argument_slots, output_slots, structure, differentiable, targets, backward_plans, device)


def _target_tensor(recording, flat, slot):
    if recording.kinds[slot] == ARGUMENT:
        return flat[recording.arguments[slot]]
    return recording.captured[slot]


def _target_node(tensor):
    return tensor.grad_fn if tensor.grad_fn is not None else accumulator(tensor)


def _targets_independent(nodes):
    """Whether no target's node is reachable from another's (else capturing at one would also
    count the paths through it towards the other, twice)."""
    wanted = set(nodes)
    for start in nodes:
        if type(start).__name__ == "AccumulateGrad":
            continue
        stack = [child for child, _ in start.next_functions if child is not None]
        visited = set()
        while stack:
            node = stack.pop()
            if node in wanted:
                return False
            if node in visited:
                continue
            visited.add(node)
            stack.extend(child for child, _ in node.next_functions if child is not None)
    return True


def _trace_backward(recording, outputs, differentiable, targets, flat, backward_plans):
    """Record each differentiable output's backward (False: a graph break, said in ``broken``)."""
    tensors = [_target_tensor(recording, flat, slot) for slot in targets]
    nodes = [_target_node(t) for t in tensors]
    if any(node.pre_hooks or node.retained is not None for node in nodes):
        recording.broken = "a hook is registered on a non-leaf input"
        return False
    if not _targets_independent(nodes):
        recording.broken = "one input (or captured tensor) is computed from another"
        return False
    recording.phase_backward = True
    pending = []
    for k, out in enumerate(outputs):
        if not differentiable[k]:
            continue
        with backend.on_device(out._data):
            seed = Tensor._make(backend.namespace_of(out._data).ones_like(out._data))
        cotangent = recording.cotangent(seed)
        start = len(recording.steps)
        try:
            with tracer.recording(recording):
                grads = run_backward([out], [seed], retain_graph=True, create_graph=True, inputs=tensors,
                                     accumulate=False, allow_unused=True, record=False)
        except (NotImplementedError, RuntimeError) as error:
            recording.broken = f"the backward cannot be recorded: {error}"
            return False
        steps = recording.steps[start:]
        if any(isinstance(s, (GuardStep, RandomStep)) for s in steps) or recording.broken is not None:
            recording.broken = recording.broken or "the backward reads tensor values in Python"
            return False
        grad_slots = [None if g is None else recording.slot_of(g, CONSTANT) for g in grads]
        pending.append((k, steps, cotangent, grad_slots))
    recording.check_unchanged()
    if recording.broken is not None:
        return False
    forward_size = recording.forward_size
    free = max((numel(getattr(v, "shape", ())) for v in recording.values), default=0) >= LARGE_BUFFER
    for k, steps, cotangent, grad_slots in pending:
        read = set()
        for step in steps:
            read.update(step.inputs)
        read.update(s for s in grad_slots if s is not None)
        reads = tuple(sorted(s for s in read if s < forward_size and recording.kinds[s] != CONSTANT))
        backward_plans[k] = BackwardPlan(steps, cotangent, grad_slots, reads, recording.values, free)
    return True


# ---- replay ------------------------------------------------------------------------------------


def _replay(plan, flat):
    return _results(plan, plan.replay([value._data if isinstance(value, Tensor) else None for value in flat]), flat)


def _results(plan, env, flat):
    """The call's outputs from its environment; with one CompiledFunctionBackward node each
    when the call records a graph."""
    make = Tensor._make
    if not plan.targets:
        outputs = [make(env[slot]) for slot in plan.output_slots]
    else:
        call = _CompiledCall(plan, env, flat)
        outputs = []
        for k, slot in enumerate(plan.output_slots):
            out = make(env[slot])
            if plan.differentiable[k]:
                out._requires_grad = True
                out.grad_fn = call.node(k)
            outputs.append(out)
    if plan.structure == "tensor":
        return outputs[0]
    return tuple(outputs) if plan.structure == "tuple" else outputs


class _CompiledOp:
    """What a CompiledFunctionBackward node holds as its ``op``: the backward machinery reads
    ``vjp.call(values, params)`` (as for an op on a list of inputs) and frees it after use."""

    name = "CompiledFunction"
    variadic = True
    broadcast = False
    saves_out = True
    saved_inputs = ()
    extra_outputs = False

    def __init__(self):
        self.vjp = self

    @staticmethod
    def call(values, params):
        call, k = params
        return call.gradients(k, values[0])

    @staticmethod
    def owned_gradients(params, grads, g):
        """Per gradient, whether it is a fresh array that only this backward pass holds (then a
        leaf's empty ``.grad`` takes it without a copy, as eager's do): never a pooled buffer,
        which the next replay writes again (the backward pass asks this instead of judging)."""
        call, k = params
        return call.owned_gradients(k, grads, g)


_COMPILED_OP = _CompiledOp()


class _CompiledCall:
    """One replayed call that records a graph: the forward's environment (in plans with large
    buffers, only what the backward reads is left in it), the tensors it read, their versions."""

    __slots__ = ("env", "flat", "plan", "target_tensors", "versions")

    def __init__(self, plan, env, flat):
        self.plan = plan
        self.env = env
        self.flat = flat
        self.target_tensors = [flat[source] if type(source) is int else source for source in plan.target_sources]
        self.versions = [(t._version_counter, t._version_counter[0]) for t in plan.read_tensors(flat)]

    def node(self, k):
        plan = self.plan
        saved = [None]
        checks = []
        for source in plan.checked_sources[k]:
            tensor = self.flat[source] if type(source) is int else source
            counter = tensor._version_counter
            checks.append((counter, counter[0], len(saved) - 1))
            saved.append(tensor)
        next_functions = tuple(
            (t.grad_fn, 0) if t.grad_fn is not None else (t._accumulator or accumulator(t), 0)
            for t in self.target_tensors
        )
        return CompiledFunctionBackward(_COMPILED_OP, (self, k), next_functions, saved, checks, plan.target_shapes,
                                        plan.output_shapes[k], plan.output_dtypes[k])

    def gradients(self, k, g):
        plan = self.plan
        if isinstance(g, Tensor) or g.ndim != len(plan.output_shapes[k]):
            return self.eager_gradients(k, g)
        if plan.device is not None:
            with backend.on_device(plan.device):
                return plan.backward_plans[k].run(self.env, g)
        return plan.backward_plans[k].run(self.env, g)

    def owned_gradients(self, k, grads, g):
        plan = self.plan.backward_plans[k]
        env = self.env
        owned = []
        for grad, candidate in zip(grads, plan.fresh_results):
            owned.append(candidate and type(grad) is backend.ndarray and grad.base is None and grad.flags.writeable
                         and grad is not g and not (plan.pool is not None and plan.pool.holds(grad))
                         and not any(value is grad for value in env)
                         and [other is grad for other in grads].count(True) == 1)
        return owned

    def eager_gradients(self, k, g):
        """The gradients through the plan run again on Tensors: ``create_graph=True`` (``g`` is a
        Tensor) or a batch of cotangents (``g`` has leading axes)."""
        for counter, version in self.versions:
            if counter[0] != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: an input of CompiledFunctionBackward is at version {counter[0]}; "
                    f"expected version {version} instead."
                )
        plan = self.plan
        create_graph = isinstance(g, Tensor)
        grad = g if create_graph else Tensor._make(g)
        arguments = [value if isinstance(value, Tensor) else None for value in self.flat]
        random_values = [self.env[slot] for slot in plan.random_slots]
        with grad_mode.enable_grad():
            env = plan.run_on_tensors(arguments, random_values)
            out = env[plan.output_slots[k]]
            seed = _BatchedGrad(grad) if grad._data.ndim != out._data.ndim else grad
            grads = run_backward([out], [seed], retain_graph=create_graph, create_graph=create_graph,
                                 inputs=self.target_tensors, accumulate=False, allow_unused=True)
        if create_graph:
            return grads
        return [None if r is None else r._data for r in grads]
