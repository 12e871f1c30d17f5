"""What client programs may call and touch: the functions, tensor methods and attributes, constants.

The whitelists are built from the derivative table (``engine.ops.table``):
the function and method variants its public entries declare (never in-place
ones: programs do not modify tensors in place), plus short explicit lists of
what is built from them (``flatten``, ``split``...) and of metadata (``size``,
``item``), never by reflecting over ``Tensor``. Creation
functions (``zeros``, ``arange``, ``tensor``...) check the size of what they
are about to allocate against the active budget first; the Python built-ins a
program may use (``range``, ``len``, ``list``...) are wrapped so that they
cannot build more than ``MAX_SEQUENCE`` items or loop past the step budget.
``frontends.program`` interprets programs against these tables.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable

from engine import backend, creation, functions, ops
from engine.autograd import grad_mode
from engine.tensor import Tensor
from frontends import budget as budget_module
from frontends.budget import Budget, BudgetExceeded

MAX_SEQUENCE = 1_000_000  # items in a Python list or tuple a program builds
MAX_LIST_NESTING = 32


def _numbers_only(*values) -> bool:
    return not builtins.any(isinstance(v, Tensor) for v in values)


def _abs(x):
    """|x| for tensors and numbers."""
    return builtins.abs(x)


def _max(x, *rest, **kwargs):
    """max of a tensor (engine.max), or of numbers (Python's max)."""
    if _numbers_only(x, *rest) and not kwargs:
        return builtins.max(x, *rest)
    return functions.max(x, *rest, **kwargs)


def _min(x, *rest, **kwargs):
    """min of a tensor (engine.min), or of numbers (Python's min)."""
    if _numbers_only(x, *rest) and not kwargs:
        return builtins.min(x, *rest)
    return functions.min(x, *rest, **kwargs)


def _sum(x, *rest, **kwargs):
    """sum of a tensor (engine.sum), or of a list/tuple of values (Python's sum)."""
    if isinstance(x, (list, tuple)) and not kwargs:
        _charge_sequence(x)
        return builtins.sum(x, *rest)
    return functions.sum(x, *rest, **kwargs)


def _round(x, ndigits=None):
    """round a number (Python's round)."""
    return builtins.round(x, ndigits)


def _length(value) -> int:
    try:
        return len(value)
    except OverflowError:
        return math.inf


def _charge_sequence(value) -> None:
    """Materializing a sequence costs one step per element."""
    budget_module.charge(_length(value) if isinstance(value, (range, list, tuple)) else 1)


def _range(*args):
    """range(stop) / range(start, stop[, step]) for loops; refused when longer than the steps left."""
    r = builtins.range(*(operator.index(a) for a in args))
    left = budget_module.steps_left()
    if left is not None and _length(r) > left:
        limit = budget_module.active_budget().max_steps
        raise BudgetExceeded(
            "steps", limit, f"range of {_length(r)} iterations exceeds the step budget ({left} steps left of {limit})"
        )
    return r


def _sequence(kind):
    def convert(values=()):
        _check_sequence_length(_length(values) if not isinstance(values, Tensor) else len(values))
        _charge_sequence(values)
        return kind(values)

    convert.__name__ = kind.__name__
    convert.__doc__ = f"{kind.__name__}(values): a Python {kind.__name__}"
    return convert


def _enumerate(values, start=0):
    """enumerate(values): a list of (index, value) pairs."""
    _check_sequence_length(len(values))
    _charge_sequence(values)
    return list(builtins.enumerate(values, start))


def _zip(*sequences):
    """zip(a, b, ...): a list of tuples."""
    for s in sequences:
        _check_sequence_length(len(s))
        _charge_sequence(s)
    return list(builtins.zip(*sequences))


def _check_sequence_length(length) -> None:
    limit = sequence_limit()
    if length > limit:
        raise BudgetExceeded("elements", limit, f"a sequence of {length} items exceeds the limit of {limit}")


# ---- creation functions, with their size checked before allocating -------------


def _shape_of(size, what) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    shape = tuple(operator.index(n) for n in size)
    if builtins.any(n < 0 for n in shape):
        raise ValueError(f"{what}: negative dimension in size {shape}")
    budget_module.check_elements(math.prod(shape), f"{what}{shape}")
    return shape


def _zeros(*size, dtype=None, requires_grad=False, device=None):
    """a tensor of zeros of the given size"""
    return creation.zeros(_shape_of(size, "zeros"), dtype=dtype, device=device, requires_grad=requires_grad)


def _ones(*size, dtype=None, requires_grad=False, device=None):
    """a tensor of ones of the given size"""
    return creation.ones(_shape_of(size, "ones"), dtype=dtype, device=device, requires_grad=requires_grad)


def _rand(*size, dtype=None, requires_grad=False, device=None):
    """uniform random numbers in [0, 1)"""
    return creation.rand(_shape_of(size, "rand"), dtype=dtype, device=device, requires_grad=requires_grad)


def _randn(*size, dtype=None, requires_grad=False, device=None):
    """standard normal random numbers"""
    return creation.randn(_shape_of(size, "randn"), dtype=dtype, device=device, requires_grad=requires_grad)


def _full(size, fill_value, *, dtype=None, requires_grad=False, device=None):
    """a tensor of the given size filled with fill_value"""
    size = (size,) if not isinstance(size, (tuple, list)) else size
    shape = _shape_of(size, "full")
    return creation.full(shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def _eye(n, m=None, *, dtype=None, requires_grad=False, device=None):
    """the identity matrix (n x m)"""
    _shape_of((n, n if m is None else m), "eye")
    return creation.eye(n, m, dtype=dtype, device=device, requires_grad=requires_grad)


def _arange(start, end=None, step=1, *, dtype=None, requires_grad=False, device=None):
    """values from start to end (exclusive) by step"""
    low, high = (0, start) if end is None else (start, end)
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    count = builtins.max(math.ceil((float(high) - float(low)) / float(step)), 0)
    budget_module.check_elements(count, "arange")
    return creation.arange(start, end, step, dtype=dtype, device=device, requires_grad=requires_grad)


def _linspace(start, end, steps, *, dtype=None, requires_grad=False, device=None):
    """steps evenly spaced values from start to end"""
    _shape_of((steps,), "linspace")
    return creation.linspace(start, end, steps, dtype=dtype, device=device, requires_grad=requires_grad)


def _count_data(data) -> int:
    """Elements of nested lists, refusing more than the element budget.

    A list repeated by reference (``[[0.0] * n] * m``) is counted once per
    object, so the count costs at most one visit per list slot that really
    exists, however large the nested structure pretends to be.
    """
    state = budget_module.active_budget()
    limit = state.max_elements if state is not None else Budget().max_elements
    counted: dict[int, int] = {}

    def count(item, depth) -> int:
        if not isinstance(item, (list, tuple)):
            return 1
        if depth >= MAX_LIST_NESTING:
            raise ValueError(f"tensor: data nested more than {MAX_LIST_NESTING} levels deep")
        known = counted.get(id(item))
        if known is not None:
            return known
        if not builtins.any(isinstance(v, (list, tuple)) for v in item):
            total = len(item)
        else:
            total = 0
            for value in item:
                total += count(value, depth + 1)
                if total > limit:
                    break
        if total > limit:
            raise BudgetExceeded("elements", limit, f"tensor data has more than {limit} elements")
        counted[id(item)] = total
        return total

    return count(data, 0)


def _tensor(data, *, dtype=None, requires_grad=False, device=None):
    """a tensor from a number or nested lists"""
    if isinstance(data, Tensor):
        return data.detach().clone() if dtype is None else data.detach().to(dtype=dtype)
    _count_data(data)
    return creation.tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(make):
    def create(x, *args, dtype=None, requires_grad=False, device=None):
        if not isinstance(x, Tensor):
            raise TypeError(f"{make.__name__}(): argument 'input' must be Tensor, not {type(x).__name__}")
        return make(x, *args, dtype=dtype, requires_grad=requires_grad)

    create.__name__ = make.__name__
    create.__doc__ = f"a tensor shaped like input ({make.__name__})"
    return create


def client_variants(kind: str) -> list[str]:
    """The ``kind`` ("functions" or "methods") variants clients may call: those that run only
    public table ops (``public=False`` marks the internal ones) and none of them in place."""
    return sorted(
        name
        for name, declaring in ops.table.variants(kind).items()
        if builtins.all(op.public and name not in op.inplace for op in declaring)
    )


# Functions built from the table's (no entry of their own) that programs may call too.
COMPOSITE_FUNCTIONS = ("flatten", "broadcast_to", "square", "numel", "detach", "allclose", "equal")

_PYTHON_FUNCTIONS = {
    "range": _range,
    "len": builtins.len,
    "float": builtins.float,
    "int": builtins.int,
    "bool": builtins.bool,
    "abs": _abs,
    "max": _max,
    "min": _min,
    "sum": _sum,
    "round": _round,
    "list": _sequence(list),
    "tuple": _sequence(tuple),
    "enumerate": _enumerate,
    "zip": _zip,
}

CREATION = {
    "zeros": _zeros,
    "ones": _ones,
    "full": _full,
    "eye": _eye,
    "arange": _arange,
    "linspace": _linspace,
    "tensor": _tensor,
    "rand": _rand,
    "randn": _randn,
    "zeros_like": _like(creation.zeros_like),
    "ones_like": _like(creation.ones_like),
    "full_like": _like(creation.full_like),
    "rand_like": _like(creation.rand_like),
    "randn_like": _like(creation.randn_like),
}


def _build_functions() -> dict[str, Callable]:
    found = {name: getattr(functions, name) for name in (*client_variants("functions"), *COMPOSITE_FUNCTIONS)}
    found.update(CREATION)
    found.update(_PYTHON_FUNCTIONS)
    return found


FUNCTIONS: dict[str, Callable] = _build_functions()

GRAD_MODES = {
    "no_grad": grad_mode.no_grad,
    "enable_grad": grad_mode.enable_grad,
    "set_grad_enabled": grad_mode.set_grad_enabled,
}

CONSTANTS = {
    "pi": math.pi,
    "e": math.e,
    "inf": math.inf,
    "nan": math.nan,
    "float32": backend.float32,
    "float64": backend.float64,
    "int32": backend.int32,
    "int64": backend.int64,
}

# Tensor methods built from the table's methods, or reading metadata, that programs may call too.
COMPOSITE_METHODS = (
    "size",
    "dim",
    "numel",
    "item",
    "detach",
    "view_as",
    "reshape_as",
    "flatten",
    "unflatten",
    "expand_as",
    "broadcast_to",
    "split",
    "chunk",
    "unbind",
    "narrow",
    "select",
    "contiguous",
    "allclose",
    "equal",
    "is_floating_point",
)

TENSOR_METHODS = frozenset((*client_variants("methods"), *COMPOSITE_METHODS))
TENSOR_ATTRIBUTES = frozenset(("shape", "ndim", "T", "mT", "data", "dtype", "requires_grad", "is_leaf"))
RESULT_ATTRIBUTES = frozenset(("values", "indices"))  # of x.max(dim=...)
LIST_METHODS = frozenset(("append",))
ATTRIBUTE_NAMES = TENSOR_METHODS | TENSOR_ATTRIBUTES | RESULT_ATTRIBUTES | LIST_METHODS

_FORBIDDEN_WORDS = """
    eval exec compile open getattr setattr delattr hasattr globals locals vars dir
    type object super isinstance issubclass input print help breakpoint id memoryview bytearray
    bytes classmethod staticmethod property exit quit iter next map filter format repr chr ord callable
"""
# Python built-ins programs cannot use, named in the error so nobody wonders whether they were misspelt.
FORBIDDEN_BUILTINS = frozenset(_FORBIDDEN_WORDS.split())

_EXTRA_DOCS = {
    "allclose": "whether two tensors are equal within tolerances (a bool)",
    "equal": "whether two tensors have the same shape and values (a bool)",
    "broadcast_to": "broadcast to a larger shape without copying",
    "detach": "the same values, cut off from the graph",
    "flatten": "the tensor's dims from start_dim to end_dim merged into one",
    "numel": "the number of elements",
    "square": "x ** 2",
    "t": "the transpose of a matrix (a vector is returned as is)",
    "len": "the size of the first dimension, or a sequence's length",
    "float": "a one-element tensor or a number as a Python float",
    "int": "a one-element tensor or a number as a Python int",
    "bool": "a one-element tensor or a number as a Python bool",
}


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _describe(name: str, fn) -> str:
    """The op's doc for its own name, else the function's (``mm``), else its op's (``multiply``)."""
    if name in _EXTRA_DOCS:
        return _EXTRA_DOCS[name]
    op = (ops.table.variants("functions").get(name) or [None])[0]
    if op is not None and op.name == name and op.doc:
        return op.doc
    return _first_line(fn.__doc__) or (op.doc if op is not None else "") or name


def available_functions() -> dict[str, str]:
    """Every function a client expression or program may call: name -> one-line description."""
    described = {}
    for name, fn in sorted(FUNCTIONS.items()):
        described[name] = _describe(name, fn)
    for name in sorted(GRAD_MODES):
        described[name] = f"with {name}(...): a block run under that grad mode"
    return described


def available_methods() -> list[str]:
    """Tensor methods a client may call."""
    return sorted(TENSOR_METHODS)


def available_attributes() -> list[str]:
    """Tensor attributes a client may read."""
    return sorted(TENSOR_ATTRIBUTES)


def sequence_limit() -> int:
    state = budget_module.active_budget()
    return builtins.min(state.max_elements if state is not None else Budget().max_elements, MAX_SEQUENCE)
