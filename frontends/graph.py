"""JSON graphs <-> engine calls: the ``graph`` form of a client function.

A graph is ONNX-like JSON, topologically ordered, with SSA names::

    {"nodes": [{"op": "sin", "inputs": ["a"], "output": "b"},
               {"op": "mul", "inputs": ["b", 2.0], "output": "c"},
               {"op": "sum", "inputs": ["c"], "output": "out", "attrs": {"dim": 0}}],
     "outputs": ["out"]}

- ``op``: a public op of the derivative table (``engine.ops.table``, where
  internal ops say ``public=False``; ``available_ops()`` lists the public ones), or
  ``"constant"`` (no inputs; ``attrs: {"value": number or nested list,
  "dtype"?: "float32"}``) which makes a tensor.
- ``inputs``: names of the function's inputs or of earlier nodes' outputs;
  a JSON number (or ``{"const": number}``) is a scalar operand, and ``null`` an
  absent optional operand (``linear``'s bias). Variadic ops (``cat``,
  ``stack``) take the list of tensors to join. Every node needs at least one
  named (tensor) input, except ``constant``.
- ``output``: the new name (never reused: SSA). Ops with extra results
  (``max_dim``, ``min_dim``: values and indices) take a list of names.
- ``attrs``: the op's parameters, checked against the table's keyword
  parameters (``op.param_defaults``; ``op.required_params`` must be given).
  ``getitem``/``index_put``'s ``index`` is a list with one entry per indexed
  axis: an integer, ``null`` (a new axis), ``"..."`` (Ellipsis),
  ``{"slice": [start, stop, step]}`` (each an integer or null; 1 to 3 entries),
  or a nested list of integers (an integer-array index) or of booleans (a
  mask). ``x[0, 1:3]`` is ``[0, {"slice": [1, 3]}]``; ``x[[0, 2]]`` is
  ``[[0, 2]]``. A bare non-list entry stands for a one-entry index.
  ``norm``'s ``p`` may be ``"inf"``, ``"-inf"`` or ``"fro"``.
- ``outputs``: the names returned; one name gives a Tensor, several a tuple.

Everything is validated before anything runs, and every error is a
``GraphError`` naming the node (index, op, output). Errors the ops raise while
running (shape mismatches) are ``GraphRuntimeError`` naming the node as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from engine import backend, creation, ops
from engine.autograd.function import apply
from engine.errors import ENGINE_ERRORS
from engine.tensor import Tensor
from frontends import budget as budget_module
from frontends.budget import DEFAULT_BUDGET, Budget, BudgetExceeded

_NODE_KEYS = frozenset({"op", "inputs", "output", "attrs"})
_GRAPH_KEYS = frozenset({"nodes", "outputs"})
_MAX_INDEX_NESTING = 32


class GraphError(ValueError):
    """A JSON graph is invalid, naming the node (index), its op and its output.

    ``hint``, for an op a graph may not use, says which function lists the ones it
    may; ``str()`` ends with it, while ``where`` and ``message`` leave it out (a
    caller with its own listing, such as the service, points there instead).
    """

    def __init__(self, message: str, node: int | None = None, output=None, op: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.node = node
        self.output = output
        self.op = op
        self.hint = hint

    @property
    def where(self) -> str:
        """``"node 2 (sin -> b)"``, or ``"graph"`` for the graph as a whole."""
        if self.node is None:
            return "graph"
        what = f"{self.op} -> {self.output}" if self.op else f"-> {self.output}"
        return f"node {self.node} ({what})"

    def __str__(self) -> str:
        text = self.message if self.hint is None else f"{self.message}; {self.hint}"
        return f"{self.where}: {text}"


class GraphRuntimeError(GraphError):
    """An op failed while the graph ran; ``error`` is the engine's exception."""

    def __init__(self, error: BaseException, node: int, output, op: str):
        super().__init__(f"{type(error).__name__}: {error}", node, output, op)
        self.error = error


def available_ops() -> dict[str, str]:
    """Ops a graph node may name: op name -> one-line description."""
    described = {name: op.doc for name, op in sorted(ops.table.items()) if op.public}
    described["constant"] = "a tensor from attrs.value (a number or nested lists), optional attrs.dtype"
    return described


# ---- attribute checking --------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_list(value, what):
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise ValueError(f"{what} must be a list of integers, got {value!r}")
    return tuple(value)


def _dim(value, what):
    if value is None or _is_int(value):
        return value
    return _int_list(value, what)


def _bool(value, what):
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _number(value, what):
    if not _is_number(value):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return value


def _optional_number(value, what):
    return None if value is None else _number(value, what)


def _int(value, what):
    if not _is_int(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def _norm_order(value, what):
    named = {"inf": math.inf, "-inf": -math.inf, "fro": 2.0}
    if isinstance(value, str) and value in named:
        return named[value]
    return _number(value, what)


def _choice(*allowed):
    def check(value, what):
        if value not in allowed:
            raise ValueError(f"{what} must be one of {list(allowed)}, got {value!r}")
        return value

    return check


def _dtype(value, what):
    if not isinstance(value, str):
        raise ValueError(f'{what} must be a dtype name such as "float32", got {value!r}')
    return backend.dtype(value).name


def _shape(value, what):
    shape = _int_list(value, what)
    if any(n < -1 for n in shape):
        raise ValueError(f"{what} has a negative size: {list(shape)}")
    return shape


def _index_part(value, what, budget):
    if value is None or _is_int(value):
        return value
    if value == "...":
        return Ellipsis
    if isinstance(value, dict):
        bounds = value.get("slice")
        if set(value) != {"slice"} or not isinstance(bounds, list) or not 1 <= len(bounds) <= 3:
            raise ValueError(f'{what}: a slice is {{"slice": [start, stop, step]}}, got {value!r}')
        if not all(b is None or _is_int(b) for b in bounds):
            raise ValueError(f"{what}: slice bounds must be integers or null, got {bounds!r}")
        if len(bounds) == 3 and bounds[2] == 0:
            raise ValueError(f"{what}: slice step cannot be zero")
        return slice(*bounds) if len(bounds) > 1 else slice(None, bounds[0])
    if isinstance(value, list):
        leaves = _check_nested(value, f"{what} (an index array)", budget)
        if leaves and not (all(_is_int(v) for v in leaves) or all(isinstance(v, bool) for v in leaves)):
            raise ValueError(f"{what}: an index array holds integers or booleans only")
        is_mask = bool(leaves) and isinstance(leaves[0], bool)
        try:
            return backend.numpy.asarray(value, dtype=bool if is_mask else backend.int64.np)
        except ValueError as error:
            raise ValueError(f"{what}: {error}") from None
    raise ValueError(f"{what}: unsupported index entry {value!r}")


def _index(value, what, budget):
    parts = value if isinstance(value, list) else [value]
    return tuple(_index_part(part, what, budget) for part in parts)


# Parameter name -> checker(value, what) returning the value the op takes. A
# parameter the table adds later without a checker here gets the generic
# check by its default's type (_generic_check).
_CHECKERS = {
    "dim": _dim,
    "dims": _dim,
    "keepdim": _bool,
    "largest": _bool,
    "correction": _number,
    "beta": _number,
    "threshold": _number,
    "exponent": _number,
    "value": _number,
    "p": _norm_order,
    "approximate": _choice("none", "tanh"),
    "min": _optional_number,
    "max": _optional_number,
    "shape": _shape,
    "reps": _shape,
    "dim0": _int,
    "dim1": _int,
    "lead": _int,
    "dtype": _dtype,
}


def _generic_check(default):
    def check(value, what):
        if default is None:
            if value is None or _is_number(value) or isinstance(value, (bool, str)):
                return value
            if isinstance(value, list) and all(_is_number(v) or isinstance(v, bool) for v in value):
                return tuple(value)
        elif type(value) is type(default) or (isinstance(default, float) and _is_number(value)):
            return value
        raise ValueError(f"{what} has an unsupported value {value!r}")

    return check


def _check_nested(value, what, budget) -> list:
    """The leaves of nested lists, refusing more than the element budget or deep nesting."""
    leaves = []
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth >= _MAX_INDEX_NESTING:
                raise ValueError(f"{what} is nested more than {_MAX_INDEX_NESTING} levels deep")
            stack.extend((x, depth + 1) for x in reversed(item))
        elif _is_number(item) or isinstance(item, bool):
            leaves.append(item)
        else:
            raise ValueError(f"{what} holds {type(item).__name__} values; numbers only")
        if len(leaves) + len(stack) > budget.max_elements:
            raise BudgetExceeded(
                "elements", budget.max_elements, f"{what} has more than {budget.max_elements} elements"
            )
    return leaves


# ---- validation ---------------------------------------------------------------


class _Node:
    """A validated node: what to call and where its operands come from."""

    __slots__ = ("attrs", "index", "inputs", "op", "op_name", "outputs", "params")

    def __init__(self, index, op_name, op, inputs, outputs, params, attrs):
        self.index = index
        self.op_name = op_name
        self.op = op
        self.inputs = inputs  # ("name", str) | ("const", value)
        self.outputs = outputs
        self.params = params
        self.attrs = attrs


def _node_error(message, index, output, op_name, hint=None):
    return GraphError(message, index, output, op_name, hint)


def _check_attrs(op, attrs, fail, budget):
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise fail(f"attrs must be an object, got {type(attrs).__name__}")
    known = op.param_defaults
    unknown = sorted(set(attrs) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise fail(f"unknown attribute(s) {unknown} for {op.name}; allowed: {allowed}")
    missing = [name for name in op.required_params if name not in attrs]
    if missing:
        raise fail(f"missing required attribute(s) {missing} for {op.name}")
    params = dict(known)
    for name, value in attrs.items():
        what = f"attribute '{name}'"
        try:
            if name == "index":
                params[name] = _index(value, what, budget)
            else:
                params[name] = _CHECKERS.get(name, _generic_check(known[name]))(value, what)
        except (ValueError, TypeError) as error:
            raise fail(str(error)) from None
    return params


def _check_operand(value, fail, defined):
    if isinstance(value, str):
        if value not in defined:
            raise fail(
                f"input '{value}' is not defined by the function's inputs or an earlier node "
                "(nodes must be in topological order)"
            )
        return ("name", value)
    if isinstance(value, dict) and set(value) == {"const"}:
        value = value["const"]
        if not (_is_number(value) or isinstance(value, bool)):
            raise fail(f"a const operand must be a number, got {value!r}")
        return ("const", value)
    if value is None or _is_number(value) or isinstance(value, bool):
        return ("const", value)
    raise fail(f'an input must be a name, a number or {{"const": number}}, got {value!r}')


def _check_constant(attrs, fail, budget):
    if not isinstance(attrs, dict) or "value" not in attrs:
        raise fail("constant needs attrs.value (a number or nested lists of numbers)")
    unknown = sorted(set(attrs) - {"value", "dtype"})
    if unknown:
        raise fail(f"unknown attribute(s) {unknown} for constant; allowed: dtype, value")
    try:
        _check_nested(attrs["value"], "attribute 'value'", budget)
        dtype = _dtype(attrs["dtype"], "attribute 'dtype'") if attrs.get("dtype") is not None else None
    except (ValueError, TypeError) as error:
        raise fail(str(error)) from None
    return {"value": attrs["value"], "dtype": dtype}


def _check_outputs(raw, op, fail):
    count = 1 + (op.extra_outputs if op is not None else 0)
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise fail("output must be a name (a non-empty string) or, for ops with several results, a list of names")
    if len(names) != count and not (count > 1 and len(names) == 1):
        raise fail(f"{len(names)} output names for an op with {count} result(s)")
    return names


def validate(spec, input_names, budget: Budget = DEFAULT_BUDGET) -> tuple[list[_Node], list[str]]:
    """Check a graph spec completely; return its nodes ready to run and its output names."""
    if not isinstance(spec, dict):
        raise GraphError(f"a graph is an object with 'nodes' and 'outputs', got {type(spec).__name__}")
    unknown = sorted(set(spec) - _GRAPH_KEYS)
    if unknown:
        raise GraphError(f"unknown key(s) {unknown}; a graph has 'nodes' and 'outputs'")
    nodes, outputs = spec.get("nodes"), spec.get("outputs")
    if not isinstance(nodes, list):
        raise GraphError("'nodes' must be a list of nodes")
    if len(nodes) > budget.max_nodes:
        limit = budget.max_nodes
        raise BudgetExceeded("nodes", limit, f"the graph has {len(nodes)} nodes, more than {limit}")
    names = list(input_names)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise GraphError(f"input names must be distinct strings, got {names}")
    defined = dict.fromkeys(names)  # name -> defining node (None for inputs)
    prepared = []
    for index, raw in enumerate(nodes):
        prepared.append(_validate_node(index, raw, defined, budget))
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise GraphError("'outputs' must be a non-empty list of names")
    for name in outputs:
        if name not in defined:
            raise GraphError(f"output '{name}' is not defined by any node or input", output=name)
    return prepared, outputs


def _validate_node(index, raw, defined, budget) -> _Node:
    output_hint = raw.get("output") if isinstance(raw, dict) else None
    op_name = raw.get("op") if isinstance(raw, dict) else None
    output_label = output_hint if isinstance(output_hint, (str, list)) else None

    def fail(message, hint=None):
        return _node_error(message, index, output_label, op_name if isinstance(op_name, str) else None, hint)

    if not isinstance(raw, dict):
        raise fail(f"a node is an object with op, inputs, output, attrs; got {type(raw).__name__}")
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {unknown}; a node has op, inputs, output and attrs")
    if not isinstance(op_name, str):
        raise fail("'op' must be an op name")
    is_constant = op_name == "constant"
    op = None if is_constant else ops.table.get(op_name)
    if not is_constant and (op is None or not op.public):
        close = sorted(n for n, o in ops.table.items() if n.startswith(op_name[:3]) and o.public)[:5]
        if close:
            raise fail(f"unknown op '{op_name}'; did you mean {', '.join(close)}?")
        raise fail(f"unknown op '{op_name}'", "frontends.graph.available_ops() lists them")
    raw_inputs = raw.get("inputs", [])
    if not isinstance(raw_inputs, list):
        raise fail("'inputs' must be a list")
    inputs = [_check_operand(v, fail, defined) for v in raw_inputs]
    if is_constant:
        if inputs:
            raise fail("constant takes no inputs")
        params = _check_constant(raw.get("attrs"), fail, budget)
    else:
        if op.variadic:
            if not inputs or any(kind != "name" for kind, _ in inputs):
                raise fail(f"{op_name} takes a non-empty list of tensor names to join")
        elif len(inputs) != op.arity:
            expected = ", ".join(op.input_names)
            raise fail(f"{op_name} takes {op.arity} input(s) ({expected}), got {len(inputs)}")
        if not any(kind == "name" for kind, _ in inputs):
            raise fail(f"{op_name} needs at least one tensor (named) input")
        params = _check_attrs(op, raw.get("attrs"), fail, budget)
    outputs = _check_outputs(raw.get("output"), op, fail)
    for name in outputs:
        if name in defined:
            first = defined[name]
            where = "an input" if first is None else f"node {first}"
            raise fail(f"'{name}' is already defined by {where}; each name is assigned once (SSA)")
        defined[name] = index
    return _Node(index, op_name, op, inputs, outputs, params, raw.get("attrs"))


# ---- running --------------------------------------------------------------------


def _run_node(node, env, device):
    if node.op is None:  # constant
        value, dtype = node.params["value"], node.params["dtype"]
        return creation.tensor(value, dtype=dtype, device=device)
    operands = [env[v] if kind == "name" else v for kind, v in node.inputs]
    if node.op.variadic:
        return apply(node.op, (operands,), dict(node.params))
    return apply(node.op, tuple(operands), dict(node.params))


def compile_graph(spec: dict, input_names, budget: Budget = DEFAULT_BUDGET) -> Callable:
    """Validate ``spec``; return ``f(*inputs) -> Tensor | tuple`` running it under ``budget``."""
    nodes, outputs = validate(spec, input_names, budget)
    names = list(input_names)

    def run_graph(*inputs):
        if len(inputs) != len(names):
            raise TypeError(f"expected {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        env = dict(zip(names, inputs))
        device = next((t.device for t in inputs if isinstance(t, Tensor)), None)
        with budget_module.enforce(budget, count_ops=True):
            for node in nodes:
                label = node.outputs[0] if len(node.outputs) == 1 else node.outputs
                try:
                    result = _run_node(node, env, device)
                except BudgetExceeded as error:
                    error.message = f"node {node.index} ({node.op_name} -> {label}): {error.message}"
                    raise
                except GraphError:
                    raise
                except ENGINE_ERRORS as error:
                    raise GraphRuntimeError(error, node.index, label, node.op_name) from error
                if isinstance(result, tuple):
                    for name, value in zip(node.outputs, result):
                        env[name] = value
                else:
                    env[node.outputs[0]] = result
        values = tuple(env[name] for name in outputs)
        return values[0] if len(values) == 1 else values

    run_graph.input_names = tuple(names)
    return run_graph


__all__ = ["GraphError", "GraphRuntimeError", "available_ops", "compile_graph", "validate"]
