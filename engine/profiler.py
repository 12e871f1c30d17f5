"""engine.profiler: which ops ran, how often, and for how long (PyTorch's profiler API).

``with profile() as prof:`` records, in the current thread/context only:

- every forward op, named ``engine::<op>`` from the derivative table, through
  the ``op_observers`` seam of ``engine.autograd.function``;
- every backward node (``DivBackward0``, ``AccumulateGrad``), through the
  ``node_observers`` seam of ``engine.autograd.backward``: a node's event runs
  from its start until the next node of the same pass starts (or the pass ends),
  so it includes the bookkeeping that hands its gradients on;
- ``record_function("label")`` ranges, which contain whatever runs inside them.

``prof.key_averages()`` groups events by name into rows, ``.table()`` prints
them as PyTorch does, and ``prof.export_chrome_trace(path)`` writes Trace Event
Format JSON (Perfetto, chrome://tracing); ``prof.chrome_trace()`` is the same
trace as a dict.

Honest timings. Each event stores the time between two clock reads taken as
close to the work as possible: the last thing the observer does before the op
runs, and the first thing it does after. The observer's bookkeeping for an
event that runs inside another event (an op inside a ``record_function`` range,
a rule's op inside a backward node under ``create_graph=True``) is measured and
subtracted from the outer event, so it is billed to no one. What no clock read
can exclude (the calls into the observer) is measured once per process on an
empty op (``_seam_bias``) and subtracted too, erring low. Self time is the
event's time minus its children's. All times are in microseconds. The trace
keeps the raw clock reads, so its events nest exactly.

Concurrency. The observers are registered while any profile is active; each
call looks up the active recording in a ``ContextVar``, so a profile sees only
its own thread's (or task's) ops: two threads or asyncio tasks profiling at
once never see each other's. With no profile active the engine pays one list check
per op and per backward node.

Device time. ``use_device="cuda"`` also records a pair of CUDA events (through
cupy) around each op and node and reports their elapsed time in the CUDA
columns. Without a GPU it warns ``CUDA is not available, disabling CUDA
profiling`` and profiles the CPU only, as PyTorch does, so the tutorial's cell
runs unchanged everywhere.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import os
import sys
import threading
import time
import warnings
from enum import Enum

from engine import backend
from engine.autograd import function as _function
from engine.tensor import Tensor

# The module, not the ``engine.autograd.backward`` function that shadows it as an attribute.
_backward = importlib.import_module("engine.autograd.backward")

__all__ = [
    "EventList",
    "FunctionEvent",
    "FunctionEventAvg",
    "ProfileLimitError",
    "ProfilerActivity",
    "profile",
    "record_function",
]

_now = time.perf_counter_ns

# What kind of thing an event is; the trace's "cat" field.
OP, NODE, RANGE = "cpu_op", "backward", "user_annotation"

# An event is one list, filled in while it runs and kept as its record once it ends:
_KIND, _KEY, _NAME, _ENTER, _START, _END, _HIDDEN, _BYTES, _SHAPES, _DEVICE_START, _DEVICE_END = range(11)
# key: what closes it (the op, the backward pass, the record_function frame); name: None for
# an op (made from the op when the profile is read); times in ns on the perf_counter clock:
# enter is when the observer was entered (start - enter is bookkeeping), hidden the
# bookkeeping of nested events (excluded from this event's time); bytes its output's size.
# Children and self times are worked out when the profile is read, from how events nest.


def _frame(kind, key, name, enter, shapes):
    return [kind, key, name, enter, 0, 0, 0, 0, shapes, None, None]


_active: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("engine_profiler", default=None)
_current = _active.get
_registration = threading.Lock()
_active_sessions = 0


class ProfilerActivity(Enum):
    """What to profile (``torch.profiler.ProfilerActivity``)."""

    CPU = "cpu"
    CUDA = "cuda"


class ProfileLimitError(RuntimeError):
    """A profile recorded ``profile(max_events=...)`` events and another was about to start."""

    def __init__(self, limit: int):
        super().__init__(f"the profile recorded {limit} events, its limit; profile fewer repeats or a shorter run")
        self.limit = limit


class _Session:
    """One profile's recording in one context: the stack of open events and the ended ones."""

    __slots__ = ("clock", "events", "max_events", "profile_memory", "record_shapes", "stack", "tid")

    def __init__(self, record_shapes, profile_memory, clock, max_events=None):
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.clock = clock
        self.stack = []
        self.events = []
        self.max_events = sys.maxsize if max_events is None else max_events
        self.tid = threading.get_native_id()

    def check_room(self):
        """Refuse to start another event once ``max_events`` are recorded (the memory they hold)."""
        if len(self.events) >= self.max_events:
            raise ProfileLimitError(self.max_events)

    def open(self, frame):
        if self.clock is not None:
            frame[_DEVICE_START] = self.clock.mark()
        self.stack.append(frame)
        frame[_START] = _now()

    def close(self, frame, end):
        """End ``frame`` (just popped) at ``end``; its bookkeeping is hidden from its parent."""
        frame[_END] = end
        if self.clock is not None:
            frame[_DEVICE_END] = self.clock.mark()
        if frame[_KIND] is not OP:
            frame[_KEY] = None  # a pass's buffers or a range's token: not worth keeping alive
        self.events.append(frame)
        stack = self.stack
        if stack:  # the parent's clock ran through this event's bookkeeping: not its time
            stack[-1][_HIDDEN] += frame[_HIDDEN] + frame[_START] - frame[_ENTER] + _now() - end

    def unwind(self, key):
        """Pop the events left open above the one keyed ``key`` (ops or passes that raised)
        and return that one, or None. A dropped event's time counts as its parent's own."""
        stack = self.stack
        if not any(frame[_KEY] is key for frame in stack):
            return None
        while stack[-1][_KEY] is not key:
            self._drop(stack.pop())
        return stack.pop()

    def _drop(self, frame):
        if self.stack:
            parent = self.stack[-1]
            parent[_HIDDEN] += frame[_HIDDEN] + frame[_START] - frame[_ENTER]

    def finish(self):
        while self.stack:
            self._drop(self.stack.pop())


class _Observer:
    """The one observer registered with the engine's seams while any profile is active."""

    __slots__ = ()

    def before(self, op, inputs, params):
        enter = _now()
        session = _current()
        if session is None:
            return
        if len(session.events) >= session.max_events:
            session.check_room()
        shapes = None
        if session.record_shapes:
            shapes = [list(v._data.shape) if isinstance(v, Tensor) else [] for v in inputs]
        frame = [OP, op, None, enter, 0, 0, 0, 0, shapes, None, None]
        if session.clock is not None:
            session.open(frame)
            return
        session.stack.append(frame)
        frame[_START] = _now()  # the last thing before the op runs

    def after(self, op, result):
        end = _now()  # the first thing after it ran
        session = _current()
        if session is None:
            return
        stack = session.stack
        frame = stack.pop() if stack else None
        if frame is None or frame[_KEY] is not op:
            if frame is not None:
                stack.append(frame)
            frame = session.unwind(op)
            if frame is None:  # the profile began inside this op
                return
        if session.profile_memory:
            frame[_BYTES] = result._data.nbytes
        if session.clock is not None:
            session.close(frame, end)
            return
        # session.close, inlined: this runs once per recorded op.
        frame[_END] = end
        session.events.append(frame)
        if stack:  # the parent's clock ran through this event's bookkeeping: not its time
            stack[-1][_HIDDEN] += frame[_HIDDEN] + frame[_START] - frame[_ENTER] + _now() - end

    def node(self, node, run):
        """A backward node of the pass ``run`` starts (``node=None``: the pass ended)."""
        now = _now()
        session = _current()
        if session is None:
            return
        stack = session.stack
        enter = now
        if stack:  # the pass's previous node ends here
            frame = stack.pop() if stack[-1][_KEY] is run else session.unwind(run)
            if frame is not None:
                session.close(frame, now)
                enter = _now()
        if node is not None:
            session.check_room()
            session.open(_frame(NODE, run, type(node).__name__, enter, None))


_OBSERVER = _Observer()
_bias: tuple[float, float] | None = None


def _seam_bias() -> tuple[float, float]:
    """The op seam's own cost that the observer's clock reads cannot exclude, in ns per event.

    ``inside``: between the start and end reads around an op that does nothing (returning
    from ``before``, calling ``after``), billed to every op unless subtracted. ``outside``:
    what an event costs the event around it beyond the measured bookkeeping (the calls into
    the observer, the checks in ``apply``). Measured once per process on a private session
    driving the observer exactly as ``apply`` does; the minimum over several runs, so that
    a busy machine makes it err low (we never subtract more than the seam costs).
    """
    global _bias
    if _bias is not None:
        return _bias
    session = _Session(False, False, None)
    token = _active.set(session)
    observers = [_OBSERVER]
    op = object()
    inside = outside = float("inf")
    runs = 200
    try:
        for _ in range(9):
            parent = _frame(RANGE, None, "calibration", 0, None)
            session.stack[:] = [parent]
            session.events.clear()
            start = _now()
            for _ in range(runs):
                if observers:
                    for observer in observers:
                        observer.before(op, (), None)
                if observers:
                    for observer in observers:
                        observer.after(op, None)
            middle = _now()
            for _ in range(runs):
                pass
            empty = _now() - middle
            ops = sum(f[_END] - f[_START] - f[_HIDDEN] for f in session.events)
            inside = min(inside, ops / runs)
            outside = min(outside, (middle - start - empty - parent[_HIDDEN] - ops) / runs)
    finally:
        _active.reset(token)
    _bias = (max(inside, 0.0), max(outside, 0.0))
    return _bias


def _register():
    global _active_sessions
    with _registration:
        _active_sessions += 1
        if _active_sessions == 1:
            _function.op_observers.append(_OBSERVER)
            _backward.node_observers.append(_OBSERVER)


def _unregister():
    global _active_sessions
    with _registration:
        _active_sessions -= 1
        if _active_sessions == 0:
            _function.op_observers.remove(_OBSERVER)
            _backward.node_observers.remove(_OBSERVER)


class _DeviceClock:
    """CUDA events around each event (``use_device="cuda"``), read after the profile ends."""

    def __init__(self):
        self._cuda = backend.cupy.cuda

    def mark(self):
        event = self._cuda.Event()
        event.record()
        return event

    def synchronize(self) -> None:
        self._cuda.Device().synchronize()

    def elapsed_us(self, start, end) -> float:
        return self._cuda.get_elapsed_time(start, end) * 1000.0  # milliseconds -> us


# ---- the user's API ------------------------------------------------------------------------


class profile:  # noqa: N801 - PyTorch's name
    """Record ops, backward nodes and ``record_function`` ranges run inside the ``with`` block.

    ``engine.autograd.profiler.profile(use_cuda=...)`` and
    ``engine.profiler.profile(activities=[ProfilerActivity.CPU])`` are both this class.
    ``record_shapes`` keeps each op's input shapes (scalars show as ``[]``);
    ``profile_memory`` the bytes of each op's output (backward nodes allocate 0 here).
    ``max_events`` (not in PyTorch) bounds the events kept: starting one more raises
    ``ProfileLimitError``.
    """

    def __init__(self, enabled=True, *, use_cuda=None, use_device=None, record_shapes=False,
                 profile_memory=False, activities=None, with_stack=False, with_flops=False,
                 with_modules=False, max_events=None):
        if isinstance(enabled, (list, tuple, set)):  # torch.profiler.profile([ProfilerActivity.CPU])
            activities, enabled = enabled, True
        self.enabled = bool(enabled)
        if use_cuda:
            warnings.warn("The attribute `use_cuda` will be deprecated soon, please use "
                          "``use_device = 'cuda'`` instead.", FutureWarning, stacklevel=2)
            use_device = "cuda"
        if activities is not None and ProfilerActivity.CUDA in activities:
            use_device = "cuda"
        if use_device == "cpu":
            use_device = None
        if use_device is not None and use_device != "cuda":
            warnings.warn(f"The {use_device} is not a valid device option.", stacklevel=2)
            use_device = None
        if use_device == "cuda" and not backend.cuda_available():
            warnings.warn("CUDA is not available, disabling CUDA profiling", stacklevel=2)
            use_device = None
        for flag, value in (("with_stack", with_stack), ("with_flops", with_flops), ("with_modules", with_modules)):
            if value:
                warnings.warn(f"profile({flag}=True) is not supported by engine's profiler; ignored", stacklevel=2)
        self.use_device = use_device
        self.use_cuda = use_device == "cuda"
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.max_events = max_events
        self._session = None
        self._token = None
        self._entered = False
        self._finished = False
        self._start = 0
        self._events = None
        self._bias = (0.0, 0.0)

    def __enter__(self):
        if not self.enabled:
            return self
        if self._entered:
            raise RuntimeError("profiler context manager is not reentrant")
        if _current() is not None:
            raise RuntimeError("Profiler is already enabled in this thread/context; nested profiles "
                               "are not supported (use record_function to mark sub-ranges)")
        self._bias = _seam_bias()
        clock = _DeviceClock() if self.use_device == "cuda" else None
        self._session = _Session(self.record_shapes, self.profile_memory, clock, self.max_events)
        self._entered = True
        _register()
        self._token = _active.set(self._session)
        self._start = _now()
        return self

    def __exit__(self, *exc_info):
        if not self.enabled or not self._entered or self._finished:
            return False
        try:
            _active.reset(self._token)
        except ValueError:  # exited in another context than the one it entered
            _active.set(None)
        _unregister()
        self._session.finish()
        self._finished = True
        if self._session.clock is not None:
            self._session.clock.synchronize()
        return False

    def step(self) -> None:
        """``torch.profiler.profile.step()``: schedules are not supported, so every step is recorded."""

    # ---- results --------------------------------------------------------------------

    def _check_finish(self):
        if self.enabled and not self._finished:
            raise RuntimeError("Profiler didn't finish running")

    def events(self) -> EventList:
        """Every recorded event, ordered by start time, with parents and children linked."""
        self._check_finish()
        if self._events is None:
            self._events = (_build_events(self._session, self._start, self._bias) if self._session
                            else EventList())
        return self._events

    function_events = property(events)

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0) -> EventList:
        """One row per event name (and input shapes, when grouped by them)."""
        return self.events().key_averages(group_by_input_shape)

    def table(self, sort_by="self_cpu_time_total", row_limit=100, **options) -> str:
        return self.key_averages().table(sort_by=sort_by, row_limit=row_limit, **options)

    def total_average(self) -> FunctionEventAvg:
        return self.events().total_average()

    @property
    def self_cpu_time_total(self) -> float:
        return self.events().self_cpu_time_total

    def chrome_trace(self) -> dict:
        """The trace as a Trace Event Format object (what export_chrome_trace writes)."""
        return self.events().chrome_trace()

    def export_chrome_trace(self, path) -> None:
        self.events().export_chrome_trace(path)


class record_function:  # noqa: N801 - PyTorch's name
    """Mark a range of code with a label: ``with record_function("forward"):``, or as a decorator.

    Outside a profile it does nothing. The range's CPU total covers everything
    inside it; its self time is what is left after its children (ops, nodes,
    inner ranges), minus the profiler's own bookkeeping.
    """

    def __init__(self, name: str, args: str | None = None):
        self.name = name
        self.args = args
        self._open = []

    def __enter__(self):
        enter = _now()
        session = _current()
        if session is not None:
            key = object()
            self._open.append((session, key))
            session.open(_frame(RANGE, key, self.name, enter, None))
        else:
            self._open.append(None)
        return self

    def __exit__(self, *exc_info):
        end = _now()
        entry = self._open.pop() if self._open else None
        if entry is not None:
            session, key = entry
            frame = session.unwind(key)
            if frame is not None:
                session.close(frame, end)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with record_function(self.name, self.args):
                return fn(*args, **kwargs)

        return wrapper


# ---- events, averages and their formats -----------------------------------------------------


class Interval:
    """An event's time range in microseconds since the profile started."""

    __slots__ = ("end", "start")

    def __init__(self, start, end):
        self.start = start
        self.end = end

    def elapsed_us(self) -> float:
        return self.end - self.start


class _Formatted:
    """The ``*_str`` views PyTorch's events have (``"4.570ms"``)."""

    @property
    def cpu_time(self) -> float:
        return self.cpu_time_total / self.count if self.count else 0.0

    @property
    def device_time(self) -> float:
        return self.device_time_total / self.count if self.count else 0.0

    cuda_time = device_time

    @property
    def self_cuda_time_total(self) -> float:
        return self.self_device_time_total

    @property
    def cuda_time_total(self) -> float:
        return self.device_time_total

    cpu_time_str = property(lambda self: _format_time(self.cpu_time))
    cpu_time_total_str = property(lambda self: _format_time(self.cpu_time_total))
    self_cpu_time_total_str = property(lambda self: _format_time(self.self_cpu_time_total))
    device_time_str = property(lambda self: _format_time(self.device_time))
    device_time_total_str = property(lambda self: _format_time(self.device_time_total))
    self_device_time_total_str = property(lambda self: _format_time(self.self_device_time_total))


class FunctionEvent(_Formatted):
    """One recorded op, backward node or range. Times in microseconds."""

    def __init__(self, id, name, kind, thread, start, end, cpu_time_total, self_cpu_time_total,  # noqa: A002
                 input_shapes, cpu_memory_usage, self_cpu_memory_usage, device_time_total, depth):
        self.id = id
        self.name = name
        self.kind = kind
        self.thread = thread
        self.time_range = Interval(start, end)
        self.cpu_time_total = cpu_time_total
        self.self_cpu_time_total = self_cpu_time_total
        self.input_shapes = input_shapes if input_shapes is not None else []
        self.cpu_memory_usage = cpu_memory_usage
        self.self_cpu_memory_usage = self_cpu_memory_usage
        self.device_time_total = device_time_total
        self.self_device_time_total = device_time_total
        self.depth = depth
        self.count = 1
        self.cpu_parent = None
        self.cpu_children = []

    @property
    def key(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (f"<FunctionEvent id={self.id} name={self.name} cpu_time={self.cpu_time_total_str} "
                f"self_cpu_time={self.self_cpu_time_total_str} thread={self.thread} "
                f"input_shapes={self.input_shapes}>")


class FunctionEventAvg(_Formatted):
    """A row of ``key_averages()``: the events of one name (and shapes) added up."""

    def __init__(self, key=None, input_shapes=""):
        self.key = key
        self.input_shapes = input_shapes
        self.count = 0
        self.cpu_time_total = 0.0
        self.self_cpu_time_total = 0.0
        self.device_time_total = 0.0
        self.self_device_time_total = 0.0
        self.cpu_memory_usage = 0
        self.self_cpu_memory_usage = 0

    def add(self, event) -> FunctionEventAvg:
        self.count += event.count
        self.cpu_time_total += event.cpu_time_total
        self.self_cpu_time_total += event.self_cpu_time_total
        self.device_time_total += event.device_time_total
        self.self_device_time_total += event.self_device_time_total
        self.cpu_memory_usage += event.cpu_memory_usage
        self.self_cpu_memory_usage += event.self_cpu_memory_usage
        return self

    def __repr__(self) -> str:
        return (f"<FunctionEventAvg key={self.key} self_cpu_time={self.self_cpu_time_total_str} "
                f"cpu_time={self.cpu_time_str} input_shapes={self.input_shapes}>")


_SORT_KEYS = ("cpu_time", "cpu_time_total", "self_cpu_time_total", "device_time", "device_time_total",
              "self_device_time_total", "cuda_time", "cuda_time_total", "self_cuda_time_total", "count",
              "cpu_memory_usage", "self_cpu_memory_usage")


class EventList(list):
    """A list of events or averaged rows, with PyTorch's ``table``/``key_averages``/trace export."""

    def __init__(self, events=(), use_device=None, profile_memory=False):
        super().__init__(events)
        self.use_device = use_device
        self.profile_memory = profile_memory

    @property
    def self_cpu_time_total(self) -> float:
        return sum(e.self_cpu_time_total for e in self)

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0) -> EventList:
        rows: dict = {}
        for event in self:
            shapes = str(event.input_shapes) if group_by_input_shape else ""
            key = (event.key, shapes)
            row = rows.get(key)
            if row is None:
                row = rows[key] = FunctionEventAvg(event.key, shapes)
            row.add(event)
        return EventList(rows.values(), self.use_device, self.profile_memory)

    def total_average(self) -> FunctionEventAvg:
        total = FunctionEventAvg("Total")
        for event in self:
            total.add(event)
        return total

    def sorted(self, sort_by: str) -> EventList:
        """Largest first by ``sort_by`` (PyTorch's names; ``cuda`` and ``device`` are synonyms)."""
        if sort_by not in _SORT_KEYS:
            raise ValueError(f"sort_by={sort_by!r} is not a column; choose one of {', '.join(_SORT_KEYS)}")
        return EventList(sorted(self, key=lambda e: getattr(e, sort_by), reverse=True),
                         self.use_device, self.profile_memory)

    def table(self, sort_by="self_cpu_time_total", row_limit=100, max_name_column_width=55,
              max_shapes_column_width=80, header=None, top_level_events_only=False, time_unit=None) -> str:
        """The rows as PyTorch prints them: fixed-width columns between dashed rules, and a footer."""
        return _build_table(self, sort_by, row_limit, max_name_column_width, max_shapes_column_width,
                            header, top_level_events_only, time_unit)

    def chrome_trace(self) -> dict:
        """Trace Event Format: one complete ("X") event per event, plus process/thread names."""
        trace = []
        threads = set()
        pid = os.getpid()
        for event in self:
            if not isinstance(event, FunctionEvent):
                raise TypeError("a trace needs the events themselves (prof.events()), not key_averages() rows")
            threads.add(event.thread)
            args = {}
            if event.input_shapes:
                args["Input Dims"] = event.input_shapes
            if self.profile_memory:
                args["Self CPU Mem"] = event.self_cpu_memory_usage
            if self.use_device:
                args["device_time_us"] = event.device_time_total
            trace.append({"name": event.name, "cat": event.kind, "ph": "X", "ts": event.time_range.start,
                          "dur": event.time_range.elapsed_us(), "pid": pid, "tid": event.thread, "args": args})
        meta = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "engine (CPU)"}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": f"thread {tid}"}}
                 for tid in sorted(threads)]
        return {"traceEvents": meta + trace, "displayTimeUnit": "ms"}

    def export_chrome_trace(self, path) -> None:
        with open(path, "w") as file:
            json.dump(self.chrome_trace(), file)


def _build_events(session, origin, bias) -> EventList:
    """Turn the session's ended frames into linked FunctionEvents, in start order.

    Events nest exactly in time (a child's clock reads lie between its parent's), so the
    parent of each event is the innermost earlier event that has not ended before it starts.
    Times are corrected for the seam's cost that no clock read can exclude (``bias``, see
    ``_seam_bias``): ``inside`` off each op and node, ``outside`` off every event that
    contains one, per event it contains.
    """
    inside, outside = bias
    clock = session.clock
    frames = sorted(session.events, key=lambda f: (f[_START], -f[_END]))
    events = EventList(use_device="cuda" if clock is not None else None, profile_memory=session.profile_memory)
    ancestors: list = []
    for index, frame in enumerate(frames):
        kind, key, name, _, start, end, hidden, nbytes, shapes, d0, d1 = frame
        if name is None:
            name = f"engine::{key.name}"
        device = clock.elapsed_us(d0, d1) if clock is not None and d0 is not None else 0.0
        while ancestors and ancestors[-1][1] <= start:
            ancestors.pop()
        total = end - start - hidden - (inside if kind is not RANGE else 0.0)
        event = FunctionEvent(index, name, kind, session.tid, (start - origin) / 1000.0, (end - origin) / 1000.0,
                              total, 0.0, shapes, nbytes, nbytes, device, len(ancestors))
        if ancestors:
            parent = ancestors[-1][0]
            event.cpu_parent = parent
            parent.cpu_children.append(event)
        ancestors.append((event, end))
        events.append(event)
    descendants = {}
    for event in reversed(events):  # children come after their parents
        count = sum(1 + descendants[id(child)] for child in event.cpu_children)
        descendants[id(event)] = count
        event.cpu_time_total = max(0.0, event.cpu_time_total - count * outside) / 1000.0
    for event in reversed(events):  # memory: its own and its children's, innermost first
        event.cpu_memory_usage += sum(child.cpu_memory_usage for child in event.cpu_children)
    for event in events:
        children = sum(child.cpu_time_total for child in event.cpu_children)
        event.self_cpu_time_total = min(event.cpu_time_total, max(0.0, event.cpu_time_total - children))
        if event.cpu_children:  # device self time: its own minus its children's
            event.self_device_time_total = max(
                0.0, event.device_time_total - sum(c.device_time_total for c in event.cpu_children))
    return events


def _format_time(time_us: float) -> str:
    if time_us >= 1e6:
        return f"{time_us / 1e6:.3f}s"
    if time_us >= 1e3:
        return f"{time_us / 1e3:.3f}ms"
    return f"{time_us:.3f}us"


def _in_unit(time_us: float, unit: str | None) -> str:
    scale = {"s": 1e6, "ms": 1e3, "us": 1.0}.get(unit)
    return f"{time_us / scale:.3f}{unit}" if scale else _format_time(time_us)


def _share(part: float, whole: float) -> float:
    return part * 100.0 / whole if whole else 0.0


def _format_share(part: float, whole: float) -> str:
    return f"{_share(part, whole):.2f}%" if whole else "NaN"


def _format_memory(nbytes: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def _build_table(rows, sort_by, row_limit, max_name_width, max_shapes_width, header, top_level_only,
                 time_unit) -> str:
    if not rows:
        return ""
    use_device = rows.use_device
    has_device = use_device is not None and any(r.self_device_time_total > 0 for r in rows)
    has_shapes = any(str(r.input_shapes) not in ("", "[]") for r in rows)
    if sort_by is not None:
        rows = rows.sorted(sort_by)
    name_width = min(max(len(r.key) for r in rows) + 4, max_name_width)
    shapes_width = min(max(len(str(r.input_shapes)) for r in rows) + 4, max_shapes_width)

    device = (use_device or "").upper()
    headers = ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"]
    if has_device:
        headers += [f"Self {device}", f"Self {device} %", f"{device} total", f"{device} time avg"]
    if rows.profile_memory:
        headers += ["CPU Mem", "Self CPU Mem"]
    headers.append("# of Calls")
    widths = [name_width] + [12] * (len(headers) - 1)
    if has_shapes:
        headers.append("Input Shapes")
        widths.append(shapes_width)
    row_format = "".join(f"{{:>{w}}}  " for w in widths)
    rule = "".join("-" * w + "  " for w in widths)
    line_length = sum(w + 2 for w in widths) - 2

    self_total = sum(r.self_cpu_time_total for r in rows)
    device_total = sum(r.self_device_time_total for r in rows)
    lines = []
    if header is not None:
        lines += ["=" * line_length, header]
    lines += [rule, row_format.format(*headers), rule]
    shown = 0
    for row in rows:
        if shown == row_limit:
            break
        if top_level_only and getattr(row, "cpu_parent", None) is not None:
            continue
        shown += 1
        name = row.key
        if len(name) >= max_name_width - 3:
            name = name[: max_name_width - 3] + "..."
        values = [name, _format_share(row.self_cpu_time_total, self_total),
                  _in_unit(row.self_cpu_time_total, time_unit), _format_share(row.cpu_time_total, self_total),
                  _in_unit(row.cpu_time_total, time_unit), _in_unit(row.cpu_time, time_unit)]
        if has_device:
            values += [_in_unit(row.self_device_time_total, time_unit),
                       _format_share(row.self_device_time_total, device_total),
                       _in_unit(row.device_time_total, time_unit), _in_unit(row.device_time, time_unit)]
        if rows.profile_memory:
            values += [_format_memory(row.cpu_memory_usage), _format_memory(row.self_cpu_memory_usage)]
        values.append(row.count)
        if has_shapes:
            values.append(str(row.input_shapes)[:shapes_width])
        lines.append(row_format.format(*values))
    lines.append(rule)
    lines.append(f"Self CPU time total: {_in_unit(self_total, time_unit)}")
    if has_device:
        lines.append(f"Self {device} time total: {_in_unit(device_total, time_unit)}")
    return "\n".join(lines) + "\n"
