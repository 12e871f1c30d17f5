"""Limits enforced while client code runs: steps, AST/graph nodes, tensor sizes, wall clock.

A ``Budget`` states the limits; ``enforce(budget)`` makes them active for the
code running inside it, in this context only (a ``ContextVar``, so two requests
served at once by different threads or tasks never see each other's budget).

While a budget is active, every table op is checked by one observer registered
in ``engine.autograd.function.op_observers``:

- before the op runs: the deadline (``time.monotonic``), and for the ops whose
  result can be far larger than their inputs (expand, tile, outer, matmul,
  broadcasting, indexing...) the result size, estimated from shapes and
  parameters alone by the op's table entry (``estimate``), so
  ``x.expand(10**6, 10**6)`` never allocates;
- after it ran: the actual size of its result;
- before every backward node (``engine.autograd.backward.node_observers``): the
  deadline, since a backward pass runs no table op unless it builds a graph;
- around a replay of a compiled plan (``engine.compile``, whose replays run no
  table op): before it, the deadline, its ops as steps (under ``count_ops``), and the
  plan's ``cost()``: its largest buffer against ``max_elements`` and its peak of
  live elements (inputs excluded, as in eager mode), added to what the function
  holds, against ``max_live_elements``;
  after it, the deadline again. A replay of a plan is bounded work (its steps on
  buffers of known sizes), so a deadline is overrun by at most one replay, where
  eager mode overruns it by at most one op.

Creation functions do not go through the table; their callers (the program
interpreter, the graph runner) call ``check_elements`` with the size they are
about to allocate. The interpreter counts its own steps through ``charge``;
under ``enforce(..., count_ops=True)`` each table op counts as a step as well,
so a method that runs many ops (``x.unbind()``) cannot slip past the budget.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import threading
import time
import weakref

from engine.autograd import function
from engine.tensor import Tensor

# The module, not the ``engine.autograd.backward`` function that shadows it as an attribute.
_backward = importlib.import_module("engine.autograd.backward")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a client's function may do in one call."""

    max_steps: int = 100_000
    max_nodes: int = 10_000
    max_elements: int = 10_000_000
    deadline_s: float | None = None
    max_source_chars: int = 200_000
    # Elements held at once by the tensors the function made (inputs excluded):
    # many tensors each under max_elements must not add up to the whole memory.
    max_live_elements: int = 100_000_000


class BudgetExceeded(Exception):  # noqa: N818 - the service codes against this name
    """A limit of the active ``Budget`` was hit; ``kind`` says which one.

    ``kind`` is "steps", "nodes", "elements" or "deadline"; ``limit`` the
    limit that was exceeded; ``line`` the program line when known.
    """

    def __init__(self, kind: str, limit, message: str, line: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.limit = limit
        self.message = message
        self.line = line

    def __str__(self) -> str:
        if self.line is not None:
            return f"line {self.line}: {self.message}"
        return self.message


DEFAULT_BUDGET = Budget()


class _Active:
    """The running state of one ``enforce`` block."""

    __slots__ = ("budget", "count_ops", "deadline_at", "live", "steps")

    def __init__(self, budget: Budget, deadline_at: float | None, count_ops: bool):
        self.budget = budget
        self.deadline_at = deadline_at
        self.count_ops = count_ops
        self.steps = 0
        self.live = 0  # elements held by tracked tensors still alive

    def release(self, count: int) -> None:
        self.live -= count


_active: contextvars.ContextVar[_Active | None] = contextvars.ContextVar("gradserve_budget", default=None)


def active_budget() -> Budget | None:
    """The budget enforced in this context, or None."""
    state = _active.get()
    return state.budget if state is not None else None


class enforce:  # noqa: N801 - used like a function: `with enforce(budget):`
    """Enforce ``budget`` on the table ops run inside the block, in this context only.

    A nested block enforces the stricter of its own and the enclosing limits
    (and the earlier deadline), counting its own steps and live tensors. With
    ``count_ops`` every table op also counts as one step against
    ``budget.max_steps``.
    """

    __slots__ = ("budget", "count_ops", "token")

    def __init__(self, budget: Budget, *, count_ops: bool = False):
        self.budget = budget
        self.count_ops = count_ops
        self.token = None

    def __enter__(self):
        _install_observer()
        budget = self.budget
        outer = _active.get()
        deadline_at = None if budget.deadline_s is None else time.monotonic() + budget.deadline_s
        if outer is not None:
            budget = _stricter(budget, outer.budget)
            if outer.deadline_at is not None:
                deadline_at = outer.deadline_at if deadline_at is None else min(deadline_at, outer.deadline_at)
        self.token = _active.set(_Active(budget, deadline_at, self.count_ops))
        return self

    def __exit__(self, *exc_info):
        _active.reset(self.token)
        self.token = None
        _uninstall_observer()
        return False


def _stricter(inner: Budget, outer: Budget) -> Budget:
    if inner == outer:  # the usual nesting: a compiled program's budget inside the service's same one
        return inner
    limits = {
        field.name: min(getattr(inner, field.name), getattr(outer, field.name))
        for field in dataclasses.fields(Budget)
        if field.name != "deadline_s"
    }
    return dataclasses.replace(inner, **limits)


def steps_left() -> int | None:
    """Steps the active budget still allows, or None when no budget is active."""
    state = _active.get()
    return None if state is None else state.budget.max_steps - state.steps


def check_deadline(line: int | None = None) -> None:
    """Raise ``BudgetExceeded("deadline")`` when the active deadline has passed."""
    state = _active.get()
    if state is not None and state.deadline_at is not None and time.monotonic() > state.deadline_at:
        raise _deadline_error(state, line)


def charge(steps: int = 1, line: int | None = None) -> None:
    """Count ``steps`` against the active budget (and check the deadline)."""
    state = _active.get()
    if state is None:
        return
    _charge(state, steps, line)


def _charge(state: _Active, steps: int, line: int | None) -> None:
    state.steps += steps
    if state.steps > state.budget.max_steps:
        raise BudgetExceeded(
            "steps",
            state.budget.max_steps,
            f"step budget exhausted: more than {state.budget.max_steps} steps "
            "(statements, expressions and tensor ops); simplify the program or shorten its loops",
            line,
        )
    if state.deadline_at is not None and time.monotonic() > state.deadline_at:
        raise _deadline_error(state, line)


def _deadline_error(state: _Active, line: int | None) -> BudgetExceeded:
    return BudgetExceeded(
        "deadline",
        state.budget.deadline_s,
        f"deadline exceeded: the function ran longer than {state.budget.deadline_s} s",
        line,
    )


def check_elements(count: int, what: str, line: int | None = None) -> None:
    """Raise ``BudgetExceeded("elements")`` if a tensor of ``count`` elements is too big."""
    state = _active.get()
    if state is not None and count > state.budget.max_elements:
        raise _elements_error(state.budget.max_elements, count, what, line)


def track(tensor) -> None:
    """Count ``tensor`` against the active budget's live elements until it is freed.

    Tensors under ``_TRACK_FROM`` elements are not tracked (the step budget
    bounds how many a function can make); larger ones are released by a
    weakref finalizer when they die.
    """
    state = _active.get()
    if state is not None:
        _track(state, tensor, tensor.numel())


_TRACK_FROM = 4096


def _track(state: _Active, tensor, count: int) -> None:
    if count < _TRACK_FROM:
        return
    limit = state.budget.max_live_elements
    if state.live + count > limit:
        raise BudgetExceeded(
            "elements",
            limit,
            f"the function holds more than {limit} elements in live tensors; keep fewer large tensors alive at once",
        )
    state.live += count
    weakref.finalize(tensor, state.release, count)


def _elements_error(limit: int, count: int, what: str, line: int | None = None) -> BudgetExceeded:
    return BudgetExceeded(
        "elements",
        limit,
        f"{what} would have {count} elements, more than the limit of {limit} per tensor",
        line,
    )


# ---- result-size estimates ----------------------------------------------------


def estimate_elements(op, shapes, params) -> int | None:
    """The result size of ``op`` on inputs of ``shapes`` (its table entry's ``estimate``), or
    None when its result cannot be larger than an input."""
    return None if op.estimate is None else op.estimate(shapes, params)


class _BudgetObserver:
    """Checks every table op against the budget active in the current context."""

    def before(self, op, inputs, params):
        state = _active.get()
        if state is None:
            return
        if state.count_ops:
            _charge(state, 1, None)
        elif state.deadline_at is not None and time.monotonic() > state.deadline_at:
            raise _deadline_error(state, None)
        if op.estimate is None:
            return  # the result is no larger than an input; after() checks it
        shapes = [v._data.shape for v in inputs if isinstance(v, Tensor)]
        try:
            count = op.estimate(shapes, params)
        except (IndexError, TypeError, ValueError):
            count = None  # malformed arguments: the op itself reports them
        if count is not None and count > state.budget.max_elements:
            raise _elements_error(state.budget.max_elements, count, f"the result of {op.name}")

    def after(self, op, result):
        state = _active.get()
        if state is None:
            return
        count = result._data.size
        if count > state.budget.max_elements:
            raise _elements_error(state.budget.max_elements, count, f"the result of {op.name}")
        _track(state, result, count)

    def replay(self, plan):
        """A compiled plan (``engine.compile``'s) is about to replay; None: it ran."""
        state = _active.get()
        if state is None:
            return
        if state.deadline_at is not None and time.monotonic() > state.deadline_at:
            raise _deadline_error(state, None)
        if plan is None:
            return
        cost = plan.cost()
        if state.count_ops:  # the forward's table ops, as eager mode counts them
            _charge(state, sum(plan.op_counts.values()), None)
        budget = state.budget
        if cost["max_buffer_elements"] > budget.max_elements:
            raise _elements_error(budget.max_elements, cost["max_buffer_elements"], "a buffer of the compiled plan")
        made = cost["peak_live_elements"] - cost["input_elements"]  # as eager, the inputs are not counted
        if state.live + made > budget.max_live_elements:
            raise BudgetExceeded(
                "elements",
                budget.max_live_elements,
                f"the compiled plan holds up to {made} elements at once, which with the "
                f"{state.live} the function already holds is more than {budget.max_live_elements}; keep fewer "
                "large tensors alive at once",
            )

    def node(self, node, run):
        """A backward node is about to run (None: its pass ended). A pass without create_graph runs
        no table op, so without this a batched Jacobian pass, or a gradcheck's million backward
        passes, would never see the deadline."""
        if node is None:
            return
        state = _active.get()
        if state is not None and state.deadline_at is not None and time.monotonic() > state.deadline_at:
            raise _deadline_error(state, None)


_observer = _BudgetObserver()
_install_lock = threading.Lock()
_active_blocks = 0  # enforce blocks open in any thread; the observer is installed while > 0


def _install_observer() -> None:
    """Register the observer while some block is open, so code running with no budget pays
    nothing beyond apply()'s empty-list check."""
    global _active_blocks
    with _install_lock:
        _active_blocks += 1
        if _observer not in function.op_observers:
            function.op_observers.append(_observer)
        if _observer not in _backward.node_observers:
            _backward.node_observers.append(_observer)


def _uninstall_observer() -> None:
    global _active_blocks
    with _install_lock:
        _active_blocks -= 1
        if _active_blocks == 0 and _observer in function.op_observers:
            function.op_observers.remove(_observer)
        if _active_blocks == 0 and _observer in _backward.node_observers:
            _backward.node_observers.remove(_observer)


__all__ = [
    "Budget",
    "BudgetExceeded",
    "active_budget",
    "charge",
    "check_deadline",
    "check_elements",
    "enforce",
    "estimate_elements",
    "steps_left",
    "track",
]
