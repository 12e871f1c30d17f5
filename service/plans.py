"""Every client function the service runs is a cached plan.

A request's function (an ``expr``, a ``program`` or a JSON ``graph``) becomes a
``FunctionSource``: its form, its canonical text and the sha256 of both, computed
once per request (a graph is hashed from its canonical JSON, never re-serialised
and parsed again to key anything). The same id names a function registered under
``/v1/functions``, so every replica computes the same id for the same function.

Canonical text, chosen so that line and column numbers in error messages stay the
client's: an expression without its surrounding whitespace; a program with
``\\r\\n`` as ``\\n``, trailing whitespace cut from each line and trailing blank lines
dropped; a graph as sorted-key JSON with every default filled in (``"attrs": {}``
given or not is the same graph).

``PlanCache`` maps a ``PlanKey`` to a ``Plan``: the built function plus what is
derived from it per plan (the autograd graph's description). The key is (function
id, input names, the transform and the options of it that change the work it
traces, the budget the function was built under, the input signature: shape,
dtype, device and requires_grad of every input). It is an LRU bounded twice: in plans
(``GRADSERVE_PLAN_CACHE_SIZE``; 0 turns caching off) and in the bytes of the
functions' canonical texts over all plans (``GRADSERVE_PLAN_CACHE_BYTES``), because a
plan holds its function several times over in Python objects (a graph's 1e6-number
constant, 4 MB of text, is ~45 MB of floats in the plan): a count alone let 256
such plans hold ~11 GB. A function larger than the byte bound is built and run but
not kept. Prometheus counters for hits, misses and evictions and a histogram of build
times are in ``service.metrics``.

``_compile_plan`` is the one step between building a function and caching it: the
cache keeps ``engine.compile(fn)`` (traced on its first call with an input signature,
replayed after), wrapped in a ``PlanFunction`` that tallies how each call ran (replayed,
recompiled, eager: ``CompiledFunction.last_call_here``) into the request's
``CallTally`` (``counting_calls``). The routes put the tally in ``Server-Timing`` and feed
the guard-failure and fallback counters from it (``Metrics.count_plan_calls``).

Budgets (steps, elements, deadline) hold on replay too, so a cache hit is held to the
same limits as a miss: a replay runs no table op, so the budget's op observer is
asked before it with the plan's ``cost()`` (largest buffer, peak live elements, steps)
and checks the deadline before and after it (``frontends.budget``). The profiler must
see every op: under ``eager_calls()`` (profiled requests) a plan runs its function
eagerly, as built.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import contextvars
import hashlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import orjson

import engine
from frontends.budget import Budget
from service.metrics import Metrics

FORMS = ("expr", "program", "graph")


@dataclass(frozen=True)
class FunctionSource:
    """A client's function in canonical form; ``id`` is the sha256 (hex) of its form and text."""

    form: str
    text: str
    graph: dict | None = None  # the graph form's canonical content (``text`` is its JSON)
    id: str = field(default="", compare=False)

    def as_body(self) -> dict:
        """The function as a request carries it: ``{"expr": ...}``, ``{"program": ...}`` or ``{"graph": ...}``."""
        return {self.form: self.graph if self.form == "graph" else self.text}


def canonical_program(source: str) -> str:
    """``\\r\\n`` as ``\\n``, no trailing whitespace on a line, no trailing blank lines (line numbers stay)."""
    return "\n".join(line.rstrip() for line in source.replace("\r\n", "\n").split("\n")).rstrip("\n")


def function_source(form: str, value) -> FunctionSource:
    """The canonical ``FunctionSource`` of ``value`` (a string, or for a graph its plain dict)."""
    if form == "expr":
        text, graph = value.strip(), None
    elif form == "program":
        text, graph = canonical_program(value), None
    elif form == "graph":
        graph = {"nodes": [{"op": node["op"], "inputs": list(node.get("inputs", ())), "output": node["output"],
                            "attrs": dict(node.get("attrs", {}))} for node in value["nodes"]],
                 "outputs": list(value["outputs"])}
        text = orjson.dumps(graph, option=orjson.OPT_SORT_KEYS).decode()
    else:
        raise ValueError(f"a function's form is one of {FORMS}, not {form!r}")
    digest = hashlib.sha256(form.encode() + b"\0" + text.encode()).hexdigest()
    return FunctionSource(form, text, graph, digest)


def build_function(function: FunctionSource, names: tuple[str, ...], budget: Budget) -> Callable:
    """The client's function as a callable over the input tensors; validates the whole function first."""
    if function.form == "expr":
        from frontends.program import compile_expr

        return compile_expr(function.text, list(names), budget)
    if function.form == "program":
        from frontends.program import compile_program

        return compile_program(function.text, list(names), budget)
    from frontends.graph import compile_graph

    return compile_graph(function.graph, list(names), budget)


# What can make one function record different graphs on different values: Python deciding on a
# tensor's value (a conditional, `and`/`or`, a comparison's truth, a comprehension's loop, the
# builtins that compare or convert). A graph has none; an expression may; a program always may.
_BRANCHING_NODES = (ast.IfExp, ast.BoolOp, ast.Compare, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_BRANCHING_BUILTINS = frozenset({"min", "max", "any", "all", "sorted", "bool", "int", "float", "round", "len"})


def has_fixed_structure(function: FunctionSource) -> bool:
    """Whether every call with one input signature records the same autograd graph."""
    if function.form == "graph":
        return True
    if function.form == "program":
        return False
    for node in ast.walk(ast.parse(function.text, mode="eval")):
        if isinstance(node, _BRANCHING_NODES):
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BRANCHING_BUILTINS:
            return False
    return True


class CallTally(collections.Counter):
    """How one request's calls of its plan ran: counts of "replayed", "recompiled", "eager" and
    "profiled" (eager by design, under ``eager_calls``), and
    of "guard_failed" (no recorded variant applied to a known signature, a guard having seen
    another value: the call ran eagerly and recorded another variant)."""

    def summary(self) -> str:
        """``replayed``, ``recompiled``, ``eager``, ``profiled``, or the kinds that ran joined by ``+``;
        ``none`` (the request made no call)."""
        return "+".join(kind for kind in ("replayed", "recompiled", "eager", "profiled") if self[kind]) or "none"


_tally: contextvars.ContextVar[CallTally | None] = contextvars.ContextVar("gradserve_plan_calls", default=None)
_eager: contextvars.ContextVar[bool] = contextvars.ContextVar("gradserve_plan_eager", default=False)


@contextlib.contextmanager
def counting_calls(tally: CallTally):
    """Tally into ``tally`` how every plan call in this context runs."""
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


@contextlib.contextmanager
def eager_calls():
    """Plans called in this context run their functions eagerly, as built (for the profiler)."""
    token = _eager.set(True)
    try:
        yield
    finally:
        _eager.reset(token)


class PlanFunction:
    """A cached function: ``engine.compile`` of the built one, called like it; each call's kind is
    tallied (``counting_calls``), and under ``eager_calls`` the built function runs itself."""

    __slots__ = ("compiled", "eager")

    def __init__(self, fn: Callable):
        self.eager = fn
        self.compiled = engine.compile(fn)

    def __call__(self, *args):
        if _eager.get():
            tally = _tally.get()
            if tally is not None:
                tally["profiled"] += 1
            return self.eager(*args)
        compiled = self.compiled
        result = compiled(*args)
        tally = _tally.get()
        if tally is not None:
            record = compiled.last_call_here
            tally[record.kind] += 1
            if record.kind == "recompiled" and not (record.reason or "").startswith("new signature"):
                tally["guard_failed"] += 1
        return result


def _compile_plan(fn: Callable) -> Callable:
    """What the cache keeps of a built function: compiled, traced once per input signature and replayed."""
    return PlanFunction(fn)


@dataclass(frozen=True)
class PlanKey:
    function_id: str
    names: tuple[str, ...]
    transform: tuple[Hashable, ...]
    budget: Budget
    signature: tuple  # per input: (shape, dtype, device, requires_grad)


class Plan:
    """A cached function: the compiled callable, and the data derived from it once per plan."""

    __slots__ = ("_description", "_lock", "build_seconds", "fixed_structure", "fn", "function", "key")

    def __init__(self, key: PlanKey, function: FunctionSource, fn: Callable, build_seconds: float):
        self.key = key
        self.function = function
        self.fn = fn
        self.build_seconds = build_seconds
        self.fixed_structure = has_fixed_structure(function)
        self._description: tuple | None = None  # (structure, description)
        self._lock = threading.Lock()

    def description(self, structure: tuple, describe: Callable[[], list]) -> list:
        """The autograd graph's description, computed once per plan and reused while the graph's
        ``structure`` (node kinds, edges and leaf names, see ``service.compute``) is the same; a
        program whose control flow takes another path describes its new graph."""
        cached = self._description
        if cached is not None and cached[0] == structure:
            return cached[1]
        described = describe()
        with self._lock:
            self._description = (structure, described)
        return described


def plan_weight(function: FunctionSource) -> int:
    """What a plan of ``function`` counts against the cache's byte bound: its canonical text's length."""
    return len(function.text)


class PlanCache:
    """A bounded LRU of plans, thread-safe (worker threads look plans up); ``size`` 0 caches nothing.

    ``max_bytes`` bounds the plans' functions' canonical texts together (``plan_weight``); None: no bound.
    """

    def __init__(self, size: int, metrics: Metrics | None = None, max_bytes: int | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._plans: collections.OrderedDict[PlanKey, Plan] = collections.OrderedDict()
        self._bytes = 0  # the plan_weight of every plan kept
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._plans)

    def plan(self, key: PlanKey, function: FunctionSource) -> tuple[Plan, bool]:
        """The plan for ``key`` and whether it was cached; a miss builds (and validates) the function.

        A function that fails to build raises and is not cached, so an invalid one is re-checked
        (and reported) every time. Two threads missing the same key at once both build; the
        first to finish is kept.
        """
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
        if plan is not None:
            if self.metrics is not None:
                self.metrics.plan_hits.inc()
            return plan, True
        started = time.perf_counter()
        fn = _compile_plan(build_function(function, key.names, key.budget))
        plan = Plan(key, function, fn, time.perf_counter() - started)
        evicted = 0
        weight = plan_weight(function)
        if self.size > 0 and (self.max_bytes is None or weight <= self.max_bytes):
            with self._lock:
                kept = self._plans.setdefault(key, plan)
                if kept is plan:
                    self._bytes += weight
                plan = kept
                self._plans.move_to_end(key)
                while len(self._plans) > self.size or (self.max_bytes is not None and self._bytes > self.max_bytes):
                    _, dropped = self._plans.popitem(last=False)
                    self._bytes -= plan_weight(dropped.function)
                    evicted += 1
        if self.metrics is not None:
            self.metrics.plan_misses.inc()
            self.metrics.plan_build_seconds.observe(plan.build_seconds)
            if evicted:
                self.metrics.plan_evictions.inc(evicted)
            self.metrics.plan_entries.set(len(self._plans))
        return plan, False

    def holds(self, key: PlanKey) -> bool:
        """Whether a plan for ``key`` is cached (nothing is built, no counter moves)."""
        return key in self._plans

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
            self._bytes = 0
