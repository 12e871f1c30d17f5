"""The safe interpreter for client functions: one expression, or a small restricted-Python program.

Source is parsed with ``ast`` and walked by our own evaluator; nothing is ever
handed to ``eval``/``exec``/``compile``. Before anything runs, ``validate``
checks every node against a whitelist, counts the nodes (the node budget),
measures the nesting depth and resolves every free name, so most mistakes are
reported with their line and column before the first op.

The language (what a PyTorch user would write inside a function body):

- statements: assignment (with tuple unpacking), augmented assignment,
  ``if``/``elif``/``else``, ``while``, ``for`` over ``range(...)``, a tuple,
  list or tensor, ``break``/``continue``, ``return`` (one value or a tuple),
  ``pass``, and ``with no_grad():`` / ``with enable_grad():`` /
  ``with set_grad_enabled(flag):``;
- expressions: arithmetic, unary and boolean operators, chained comparisons,
  ``a if c else b``, indexing and slicing, literals (numbers, tuples, lists,
  ``None``, ``True``/``False``, ``...``), list comprehensions and generator
  expressions (evaluated eagerly into lists), and calls of the functions in
  ``FUNCTIONS`` (``available_functions()``) and of the tensor methods in
  ``TENSOR_METHODS``; tensor attributes in ``TENSOR_ATTRIBUTES``. Strings
  appear only as call arguments (``gelu(x, approximate="tanh")``).
- constants ``pi``, ``e``, ``inf``, ``nan`` and the dtypes ``float32``,
  ``float64``, ``int32``, ``int64``.

Departures from Python, all to keep client code from touching anything but
its own values: no imports, ``def``, ``lambda``, ``class``, ``try``,
``global``, ``del``, f-strings, dicts or sets; no attribute whose name starts
with ``_`` and none outside the whitelists; only named functions and
whitelisted methods can be called (functions are not values). Programs never
modify a tensor in place: ``y += 1`` rebinds ``y`` to ``y + 1`` and
``y[i] = v`` rebinds ``y`` to a copy with ``v`` written at ``i`` (the
differentiable ``index_put``), so a program cannot change its inputs.

Limits (``frontends.budget``): every statement executed, expression evaluated
and table op run is a step; ``range`` longer than the steps left is refused
at once; integers are capped at ``MAX_INT_BITS`` bits (``10**10**10`` fails
fast); creation functions check their size before allocating; nesting deeper
than ``MAX_DEPTH`` is refused before running (the evaluator recurses).
What programs may call lives in ``frontends.program_library``.

Errors: ``ProgramError`` (a ``ValueError``; ``str()`` is "line L, column C:
message", with ``construct`` naming the syntax at fault) for invalid programs,
``ProgramRuntimeError`` (its subclass, ``error`` holding the engine's
exception) for failures while running, ``frontends.budget.BudgetExceeded`` for
limits. The compiled callables take the inputs positionally, run under the
caller's grad mode, and enforce their budget (``frontends.budget.enforce``) for
the duration of each call.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import operator
from collections.abc import Callable

from engine import creation, ops
from engine.autograd.function import apply
from engine.errors import ENGINE_ERRORS
from engine.tensor import ReductionResult, Size, Tensor, _index_arg
from frontends import budget as budget_module
from frontends.budget import DEFAULT_BUDGET, Budget, BudgetExceeded
from frontends.program_library import (
    ATTRIBUTE_NAMES,
    CONSTANTS,
    CREATION,
    FORBIDDEN_BUILTINS,
    FUNCTIONS,
    GRAD_MODES,
    LIST_METHODS,
    RESULT_ATTRIBUTES,
    TENSOR_ATTRIBUTES,
    TENSOR_METHODS,
    available_attributes,
    available_functions,
    available_methods,
    sequence_limit,
)

MAX_DEPTH = 100
MAX_INT_BITS = 4096


class ProgramError(ValueError):
    """A client program is invalid or failed; ``str()`` starts with its line and column.

    ``construct`` names the offending piece of syntax (``"Attribute '__class__'"``,
    ``"Import"``, ``"call of matmul"``) when there is one. ``hint``, for a name the
    program may not use, says which function of this package lists the ones it may;
    ``str()`` ends with it, ``message`` leaves it out (a caller with its own listing,
    such as the service, points there instead).
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None, construct: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.construct = construct
        self.hint = hint

    def __str__(self) -> str:
        text = self.message if self.hint is None else f"{self.message}; {self.hint}"
        if self.line is None:
            return text
        if self.column is None:
            return f"line {self.line}: {text}"
        return f"line {self.line}, column {self.column}: {text}"


class ProgramRuntimeError(ProgramError):
    """The engine raised while the program ran (shape mismatch, bad dim...); ``error`` is the original."""

    def __init__(self, error: BaseException, line, column, construct):
        super().__init__(f"{type(error).__name__}: {error}", line, column, construct)
        self.error = error


def _where(node) -> tuple[int | None, int | None]:
    line = getattr(node, "lineno", None)
    column = getattr(node, "col_offset", None)
    if isinstance(node, ast.Attribute) and node.end_lineno == line and node.end_col_offset is not None:
        column = node.end_col_offset - len(node.attr) - 1  # at the dot before the name
    return line, None if column is None else column + 1


def _error(message: str, node, construct: str | None = None, hint: str | None = None) -> ProgramError:
    line, column = _where(node)
    return ProgramError(message, line, column, construct, hint)


# ---- static validation ------------------------------------------------------------

_STATEMENTS = (
    ast.Assign,
    ast.AugAssign,
    ast.If,
    ast.While,
    ast.For,
    ast.Break,
    ast.Continue,
    ast.Return,
    ast.Pass,
    ast.Expr,
    ast.With,
)
_EXPRESSIONS = (
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.IfExp,
    ast.Compare,
    ast.Call,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Name,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.ListComp,
    ast.GeneratorExp,
)
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.MatMult: operator.matmul,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_OTHER = (
    ast.Module,
    ast.Expression,
    ast.comprehension,
    ast.keyword,
    ast.withitem,
    ast.Load,
    ast.Store,
    ast.And,
    ast.Or,
    *_BINARY,
    *_UNARY,
    *_COMPARE,
)
_ALLOWED = frozenset((*_STATEMENTS, *_EXPRESSIONS, *_OTHER))

_REFUSED = {
    "Import": "imports are not allowed",
    "ImportFrom": "imports are not allowed",
    "FunctionDef": "defining functions is not allowed; write the body inline",
    "AsyncFunctionDef": "defining functions is not allowed",
    "Lambda": "lambda is not allowed",
    "ClassDef": "classes are not allowed",
    "Global": "global is not allowed",
    "Nonlocal": "nonlocal is not allowed",
    "Try": "try/except is not allowed",
    "TryStar": "try/except is not allowed",
    "Raise": "raise is not allowed",
    "Assert": "assert is not allowed",
    "Delete": "del is not allowed",
    "Yield": "yield is not allowed",
    "YieldFrom": "yield is not allowed",
    "Await": "await is not allowed",
    "AsyncFor": "async code is not allowed",
    "AsyncWith": "async code is not allowed",
    "JoinedStr": "f-strings are not allowed",
    "FormattedValue": "f-strings are not allowed",
    "NamedExpr": "the := operator is not allowed",
    "Dict": "dicts are not supported",
    "DictComp": "dicts are not supported",
    "Set": "sets are not supported",
    "SetComp": "sets are not supported",
    "Starred": "* unpacking is not supported",
    "AnnAssign": "annotated assignments are not supported",
    "Match": "match statements are not supported",
    "LShift": "the << operator is not supported",
    "RShift": "the >> operator is not supported",
}


def _parse(source: str, mode: str, budget: Budget) -> ast.AST:
    if not isinstance(source, str):
        raise ProgramError(f"the source must be a string, got {type(source).__name__}")
    if len(source) > budget.max_source_chars:
        raise BudgetExceeded(
            "nodes",
            budget.max_source_chars,
            f"the source has {len(source)} characters, more than the limit of {budget.max_source_chars}",
        )
    try:
        return ast.parse(source, filename="<program>", mode=mode)
    except SyntaxError as error:
        hint = ""
        if mode == "eval" and _parses_as_statements(source):
            hint = " (an expression is expected here; statements need the program form)"
        column = error.offset if error.offset is not None else None
        raise ProgramError(f"syntax error: {error.msg}{hint}", error.lineno, column, "SyntaxError") from None
    except (RecursionError, MemoryError):
        raise ProgramError(
            f"the source is nested too deeply to parse (more than {MAX_DEPTH} levels)", construct="nesting"
        ) from None
    except ValueError as error:  # e.g. null bytes
        raise ProgramError(f"invalid source: {error}") from None


def _parses_as_statements(source: str) -> bool:
    try:
        ast.parse(source, mode="exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return False
    return True


def _check_target(target, *, subscript: bool) -> None:
    stack = [target]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            continue
        if isinstance(node, (ast.Tuple, ast.List)):
            stack.extend(node.elts)
        elif subscript and isinstance(node, ast.Subscript) and node is target and isinstance(node.value, ast.Name):
            continue
        elif isinstance(node, ast.Attribute):
            raise _error("assigning to attributes is not allowed", node, f"Attribute '{node.attr}'")
        elif isinstance(node, ast.Subscript):
            raise _error("only a variable can be assigned by index (name[index] = value)", node, "Subscript")
        else:
            raise _error(f"cannot assign to {type(node).__name__}", node, type(node).__name__)


def validate(tree: ast.AST, input_names, budget: Budget) -> None:
    """Check ``tree`` against the whitelist, the node budget and the depth limit, without recursing."""
    stored = set(input_names)
    loads: list[ast.Name] = []
    grad_mode_calls = set()  # ids of the Names of `with no_grad():` items
    count = 0
    # (node, depth, parent, inside a loop)
    stack = [(tree, 0, None, False)]
    while stack:
        node, depth, parent, in_loop = stack.pop()
        count += 1
        if count > budget.max_nodes:
            raise BudgetExceeded(
                "nodes",
                budget.max_nodes,
                f"the source has more than {budget.max_nodes} syntax nodes",
                getattr(node, "lineno", None),
            )
        if depth > MAX_DEPTH:
            raise _error(f"the source is nested too deeply (more than {MAX_DEPTH} levels)", node, "nesting")
        kind = type(node)
        if kind not in _ALLOWED:
            name = kind.__name__
            raise _error(_REFUSED.get(name, f"{name} is not allowed in programs"), node, name)
        _check_node(node, parent, in_loop)
        if isinstance(node, ast.With):
            grad_mode_calls.update(id(item.context_expr.func) for item in node.items)
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                stored.add(node.id)
            else:
                loads.append((node, parent))
        loop_body = isinstance(node, (ast.While, ast.For))
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            child_in_loop = in_loop or (loop_body and field == "body")
            for child in reversed(children):
                if isinstance(child, ast.AST):
                    stack.append((child, depth + 1, node, child_in_loop))
    for node, parent in loads:
        if id(node) not in grad_mode_calls:
            _check_name(node, parent, stored)


def _check_node(node, parent, in_loop) -> None:
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _error(
                f"attribute '{node.attr}' is not allowed: names starting with '_' are private",
                node,
                f"Attribute '{node.attr}'",
            )
        if node.attr not in ATTRIBUTE_NAMES:
            raise _error(
                f"unknown attribute '{node.attr}'",
                node,
                f"Attribute '{node.attr}'",
                "programs may use the tensor methods and attributes that frontends.program.available_methods() "
                "and available_attributes() list",
            )
        if not isinstance(node.ctx, ast.Load):
            raise _error("assigning to attributes is not allowed", node, f"Attribute '{node.attr}'")
    elif isinstance(node, ast.Name):
        # A lone "_" is the usual throwaway loop variable (the tutorial's `for _ in range(1000)`).
        if node.id.startswith("_") and node.id != "_":
            raise _error(
                f"name '{node.id}' is not allowed: names starting with '_' are private", node, f"Name '{node.id}'"
            )
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            if not isinstance(parent, (ast.Call, ast.keyword, ast.Expr)) or (
                isinstance(parent, ast.Call) and node is parent.func
            ):
                raise _error(
                    "strings are only allowed as function arguments (e.g. approximate='tanh')", node, "Constant str"
                )
        elif isinstance(value, bool) or value is None or value is Ellipsis or isinstance(value, float):
            pass
        elif isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _error(f"integer literal larger than {MAX_INT_BITS} bits", node, "Constant int")
        else:
            raise _error(f"{type(value).__name__} literals are not supported", node, f"Constant {type(value).__name__}")
    elif isinstance(node, ast.Call):
        func = node.func
        if not isinstance(func, (ast.Name, ast.Attribute)):
            raise _error("only named functions and tensor methods can be called", node, "Call")
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _error("** unpacking is not supported", keyword.value, "keyword **")
            if keyword.arg.startswith("_"):
                raise _error(f"keyword '{keyword.arg}' is not allowed", keyword.value, f"keyword '{keyword.arg}'")
            if keyword.arg in ("device", "generator", "out"):
                raise _error(
                    f"the '{keyword.arg}' argument is not available in programs",
                    keyword.value,
                    f"keyword '{keyword.arg}'",
                )
    elif isinstance(node, (ast.Break, ast.Continue)):
        if not in_loop:
            word = "break" if isinstance(node, ast.Break) else "continue"
            raise _error(f"'{word}' outside a loop", node, word)
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            _check_target(target, subscript=True)
    elif isinstance(node, ast.AugAssign):
        _check_target(node.target, subscript=True)
        if isinstance(node.target, (ast.Tuple, ast.List)):
            raise _error("augmented assignment needs a single target", node, "AugAssign")
    elif isinstance(node, (ast.For, ast.comprehension)):
        _check_target(node.target, subscript=False)
        if isinstance(node, ast.comprehension) and node.is_async:
            raise _error("async code is not allowed", node.target, "comprehension")
    elif isinstance(node, ast.With):
        for item in node.items:
            call = item.context_expr
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in GRAD_MODES):
                raise _error("with is only for no_grad(), enable_grad() and set_grad_enabled(flag)", node, "With")
            if item.optional_vars is not None:
                raise _error("with ... as is not supported", node, "With")


def _check_name(node: ast.Name, parent, stored: set) -> None:
    name = node.id
    called = isinstance(parent, ast.Call) and parent.func is node
    if name in stored or name in CONSTANTS:
        return
    if name in GRAD_MODES:
        raise _error(f"{name}() is only usable as 'with {name}():'", node, f"Name '{name}'")
    if name in FUNCTIONS:
        if called:
            return
        raise _error(f"function '{name}' can only be called, not used as a value", node, f"Name '{name}'")
    if name in FORBIDDEN_BUILTINS:
        raise _error(f"'{name}' is not available in programs", node, f"Name '{name}'")
    if called:
        raise _error(f"unknown function '{name}'", node, f"Name '{name}'",
                     "frontends.program.available_functions() lists the available ones")
    raise _error(f"name '{name}' is not defined (a program sees its inputs and the names it assigns)", node,
                 f"Name '{name}'")


def _check_input_names(input_names) -> list[str]:
    names = list(input_names)
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
            raise ProgramError(f"input name {name!r} is not a valid identifier (letters, digits, '_' not first)")
    if len(set(names)) != len(names):
        raise ProgramError(f"input names repeat: {names}")
    return names


# ---- evaluation -----------------------------------------------------------------

_NUMBER = (int, float, bool)


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


_BREAK, _CONTINUE = _Signal("break"), _Signal("continue")


class _Return:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _construct(node) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return f"call of {func.id if isinstance(func, ast.Name) else func.attr}"
    if isinstance(node, ast.BinOp):
        return f"operator {type(node.op).__name__}"
    return type(node).__name__


def _guard_int_result(value, node) -> None:
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise _error(f"integer result larger than {MAX_INT_BITS} bits", node, _construct(node))


def _binary(op_type, left, right, node):
    """Python's binary operators, refusing results too large to compute quickly."""
    if type(left) is Tensor or type(right) is Tensor:
        return _BINARY[op_type](left, right)
    if type(left) in (int, bool) and type(right) in (int, bool):
        if op_type is ast.Pow and right > 0 and builtins.abs(left) > 1:
            if right * (left.bit_length() - 1) >= MAX_INT_BITS:  # left ** right has at least this many bits
                raise _error(f"{left} ** {right} is too large (more than {MAX_INT_BITS} bits)", node, "operator Pow")
        elif op_type is ast.Mult and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise _error(f"integer product larger than {MAX_INT_BITS} bits", node, "operator Mult")
    elif op_type is ast.Mult and isinstance(left, (list, tuple, str)) != isinstance(right, (list, tuple, str)):
        sequence, times = (left, right) if isinstance(left, (list, tuple, str)) else (right, left)
        if isinstance(times, int) and len(sequence) * builtins.max(times, 0) > sequence_limit():
            raise BudgetExceeded(
                "elements",
                sequence_limit(),
                f"repeating a sequence {times} times exceeds the limit of {sequence_limit()} items",
            )
    elif (
        op_type is ast.Add
        and isinstance(left, (list, tuple))
        and isinstance(right, (list, tuple))
        and len(left) + len(right) > sequence_limit()
    ):
        limit = sequence_limit()
        raise BudgetExceeded("elements", limit, f"a sequence longer than the limit of {limit} items")
    if isinstance(left, str) or isinstance(right, str):
        raise _error("strings cannot be used in arithmetic", node, _construct(node))
    result = _BINARY[op_type](left, right)
    if isinstance(result, complex):
        raise _error("the result is a complex number, which programs do not support", node, _construct(node))
    _guard_int_result(result, node)
    return result


class _Interpreter:
    """Evaluates one call of a validated program; holds its variables."""

    def __init__(self, env: dict, device):
        self.env = env
        self.device = device
        self.state = budget_module._active.get()

    # -- bookkeeping --

    def tick(self, node) -> None:
        state = self.state
        state.steps += 1
        if state.steps > state.budget.max_steps or (state.deadline_at is not None and not state.steps & 31):
            budget_module._charge(state, 0, getattr(node, "lineno", None))

    def visit(self, node):
        """Run a statement (its control signal, or None) or evaluate an expression (its value).

        Engine errors become a ``ProgramRuntimeError`` at the innermost node that
        raised them; a budget error gets that node's line.
        """
        self.tick(node)
        try:
            return _HANDLERS[type(node)](self, node)
        except ProgramError:
            raise
        except BudgetExceeded as error:
            if error.line is None:
                error.line = node.lineno
            raise
        except ENGINE_ERRORS as error:
            line, column = _where(node)
            raise ProgramRuntimeError(error, line, column, _construct(node)) from error

    run = eval = visit  # statements and expressions dispatch alike; the names say which is meant

    # -- statements --

    def run_block(self, statements):
        for statement in statements:
            signal = self.run(statement)
            if signal is not None:
                return signal
        return None

    def run_assign(self, node):
        value = self.eval(node.value)
        for target in node.targets:
            self.assign(target, value)

    def run_aug_assign(self, node):
        target = node.target
        if isinstance(target, ast.Name):
            current = self.lookup(target)
        else:
            current = self.subscript(self.lookup(target.value), self.index(target.slice))
        self.assign(target, _binary(type(node.op), current, self.eval(node.value), node))

    def run_if(self, node):
        return self.run_block(node.body if self.eval(node.test) else node.orelse)

    def run_while(self, node):
        def passes():
            while self.eval(node.test):
                yield

        return self.run_loop(node, passes())

    def run_for(self, node):
        def passes():
            for value in self.iterate(self.eval(node.iter), node.iter):
                self.tick(node)
                self.assign(node.target, value)
                yield

        return self.run_loop(node, passes())

    def run_loop(self, node, passes):
        """The body once per pass; ``break`` leaves, ``return`` leaves with its value, ``else`` runs
        when the passes run out."""
        for _ in passes:
            signal = self.run_block(node.body)
            if signal is _BREAK:
                return None
            if isinstance(signal, _Return):
                return signal
        return self.run_block(node.orelse)

    def run_return(self, node):
        return _Return(None if node.value is None else self.eval(node.value))

    def run_expr(self, node):
        self.eval(node.value)

    def run_with(self, node):
        managers = []
        for item in node.items:
            call = item.context_expr
            args = [self.eval(a) for a in call.args]
            kwargs = {k.arg: self.eval(k.value) for k in call.keywords}
            managers.append(GRAD_MODES[call.func.id](*args, **kwargs))
        return self._run_with(managers, node.body)

    def _run_with(self, managers, body):
        if not managers:
            return self.run_block(body)
        with managers[0]:
            return self._run_with(managers[1:], body)

    # -- assignment --

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = self.unpack(value, len(target.elts), target)
            for element, item in zip(target.elts, values):
                self.assign(element, item)
        else:  # name[index] = value, validated to have a Name as its base
            name = target.value.id
            container = self.lookup(target.value)
            index = self.index(target.slice)
            if isinstance(container, Tensor):
                self.env[name] = apply(ops.index_put, (container, value), {"index": _index_arg(index)})
            elif type(container) is list and isinstance(index, int):
                container[index] = value
            else:
                raise _error(f"cannot assign into a {type(container).__name__} by index", target, "Subscript")

    def unpack(self, value, count, node):
        if isinstance(value, Tensor):
            if value.ndim == 0 or len(value) != count:
                shape = tuple(value.shape)
                raise _error(f"cannot unpack a tensor of shape {shape} into {count} names", node, "unpacking")
            return list(value)
        if not isinstance(value, (tuple, list)):
            raise _error(f"cannot unpack a {type(value).__name__} into {count} names", node, "unpacking")
        if len(value) != count:
            raise _error(f"cannot unpack {len(value)} values into {count} names", node, "unpacking")
        return value

    def iterate(self, value, node):
        if isinstance(value, (range, tuple, list)):
            return value
        if isinstance(value, Tensor):
            if value.ndim == 0:
                raise _error("cannot iterate over a 0-d tensor", node, "for")
            return value
        raise _error(f"cannot iterate over a {type(value).__name__}", node, "for")

    # -- expressions --

    def lookup(self, node: ast.Name):
        name = node.id
        try:
            return self.env[name]
        except KeyError:
            pass
        if name in CONSTANTS:
            return CONSTANTS[name]
        raise _error(f"name '{name}' is used before it is assigned", node, f"Name '{name}'")

    def eval_name(self, node):
        return self.lookup(node)

    def eval_constant(self, node):
        return node.value

    def eval_binop(self, node):
        return _binary(type(node.op), self.eval(node.left), self.eval(node.right), node)

    def eval_unaryop(self, node):
        result = _UNARY[type(node.op)](self.eval(node.operand))
        _guard_int_result(result, node)
        return result

    def eval_boolop(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for operand in node.values:
            value = self.eval(operand)
            if bool(value) != is_and:
                return value
        return value

    def eval_compare(self, node):
        left = self.eval(node.left)
        result = True
        for op, comparator in zip(node.ops, node.comparators):
            right = self.eval(comparator)
            result = _COMPARE[type(op)](left, right)
            if len(node.ops) > 1 and not result:
                return result
            left = right
        return result

    def eval_ifexp(self, node):
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def eval_tuple(self, node):
        return tuple(self.eval(e) for e in node.elts)

    def eval_list(self, node):
        return [self.eval(e) for e in node.elts]

    def eval_comprehension(self, node):
        saved = self.env
        self.env = dict(saved)
        try:
            results = []
            self._comprehend(node, 0, results)
            return results
        finally:
            self.env = saved

    def _comprehend(self, node, level, results):
        generator = node.generators[level]
        for value in self.iterate(self.eval(generator.iter), generator.iter):
            self.tick(generator.target)
            self.assign(generator.target, value)
            if all(self.eval(condition) for condition in generator.ifs):
                if level + 1 < len(node.generators):
                    self._comprehend(node, level + 1, results)
                else:
                    results.append(self.eval(node.elt))
                    if len(results) > sequence_limit():
                        raise BudgetExceeded("elements", sequence_limit(), "a comprehension produced too many items")

    def eval_slice(self, node):
        parts = [None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)]
        return slice(*parts)

    def index(self, node):
        return self.eval(node)

    def subscript(self, container, index):
        if isinstance(container, (Tensor, tuple, list, range)):
            return container[index]
        raise TypeError(f"a {type(container).__name__} cannot be indexed")

    def eval_subscript(self, node):
        return self.subscript(self.eval(node.value), self.index(node.slice))

    def eval_attribute(self, node):
        value = self.eval(node.value)
        name = node.attr
        if isinstance(value, Tensor) and name in TENSOR_ATTRIBUTES:
            return getattr(value, name)
        if isinstance(value, ReductionResult) and name in RESULT_ATTRIBUTES:
            return getattr(value, name)
        if isinstance(value, Tensor) and name in TENSOR_METHODS:
            raise _error(f"method '{name}' must be called: {name}(...)", node, f"Attribute '{name}'")
        raise _error(
            f"a {type(value).__name__} has no attribute '{name}' available to programs", node, f"Attribute '{name}'"
        )

    def eval_call(self, node):
        func = node.func
        if isinstance(func, ast.Name):
            name = func.id
            if name in self.env:
                raise _error(f"'{name}' is a variable, not a function", func, f"Name '{name}'")
            target = FUNCTIONS[name]
        else:
            owner = self.eval(func.value)
            name = func.attr
            if (isinstance(owner, Tensor) and name in TENSOR_METHODS) or (type(owner) is list and name in LIST_METHODS):
                target = getattr(owner, name)
            else:
                raise _error(
                    f"a {type(owner).__name__} has no method '{name}' available to programs",
                    func,
                    f"Attribute '{name}'",
                )
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords}
        if isinstance(func, ast.Name) and name in CREATION:
            kwargs["device"] = self.device
            result = target(*args, **kwargs)
            budget_module.track(result)
            return result
        result = target(*args, **kwargs)
        _guard_int_result(result, node)  # int("9" * 4000) and the like
        return result


_STATEMENT_HANDLERS = {
    ast.Assign: _Interpreter.run_assign,
    ast.AugAssign: _Interpreter.run_aug_assign,
    ast.If: _Interpreter.run_if,
    ast.While: _Interpreter.run_while,
    ast.For: _Interpreter.run_for,
    ast.Break: lambda self, node: _BREAK,
    ast.Continue: lambda self, node: _CONTINUE,
    ast.Return: _Interpreter.run_return,
    ast.Pass: lambda self, node: None,
    ast.Expr: _Interpreter.run_expr,
    ast.With: _Interpreter.run_with,
}
_EXPRESSION_HANDLERS = {
    ast.Name: _Interpreter.eval_name,
    ast.Constant: _Interpreter.eval_constant,
    ast.BinOp: _Interpreter.eval_binop,
    ast.UnaryOp: _Interpreter.eval_unaryop,
    ast.BoolOp: _Interpreter.eval_boolop,
    ast.Compare: _Interpreter.eval_compare,
    ast.IfExp: _Interpreter.eval_ifexp,
    ast.Tuple: _Interpreter.eval_tuple,
    ast.List: _Interpreter.eval_list,
    ast.ListComp: _Interpreter.eval_comprehension,
    ast.GeneratorExp: _Interpreter.eval_comprehension,
    ast.Slice: _Interpreter.eval_slice,
    ast.Subscript: _Interpreter.eval_subscript,
    ast.Attribute: _Interpreter.eval_attribute,
    ast.Call: _Interpreter.eval_call,
}
_HANDLERS = {**_STATEMENT_HANDLERS, **_EXPRESSION_HANDLERS}  # ast.stmt and ast.expr types: disjoint


# ---- results and the public entry points ------------------------------------------


def _output(value, where: str, device):
    """A Tensor, or a tuple of Tensors; Python numbers become tensors (on the inputs' device)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, _NUMBER):
        return _number_tensor(value, where, device)
    if isinstance(value, (tuple, list)) and value and not isinstance(value, Size):
        parts = []
        for item in value:
            if isinstance(item, Tensor):
                parts.append(item)
            elif isinstance(item, _NUMBER):
                parts.append(_number_tensor(item, where, device))
            else:
                raise ProgramError(f"{where} must give Tensors or numbers, got a {type(item).__name__} in a tuple")
        return tuple(parts)
    raise ProgramError(f"{where} must give a Tensor or a tuple of Tensors, got {type(value).__name__}")


def _number_tensor(value, where: str, device):
    try:
        return creation.tensor(value, device=device)
    except RuntimeError as error:  # an int wider than int64
        raise ProgramError(f"{where}: {error}") from None


def _bind(names, args):
    if len(args) != len(names):
        raise TypeError(f"expected {len(names)} inputs ({', '.join(names)}), got {len(args)}")
    device = next((a.device for a in args if isinstance(a, Tensor)), None)
    return dict(zip(names, args)), device


def compile_expr(source: str, input_names, budget: Budget = DEFAULT_BUDGET) -> Callable:
    """Validate a single expression; return ``f(*inputs) -> Tensor | tuple`` evaluating it under ``budget``."""
    return _compiled("eval", source, tuple(_check_input_names(input_names)), budget)


def compile_program(source: str, input_names, budget: Budget = DEFAULT_BUDGET) -> Callable:
    """Validate a restricted-Python program; return ``f(*inputs)`` running it under ``budget``.

    The program's free names are the inputs; its ``return`` gives the output(s).
    """
    return _compiled("exec", source, tuple(_check_input_names(input_names)), budget)


_CACHED_SOURCE_CHARS = 20_000


def _compiled(mode: str, source, names: tuple, budget: Budget) -> Callable:
    # The compiled callables keep no state between calls, so a service that sees
    # the same function again and again validates it once.
    if isinstance(source, str) and len(source) <= _CACHED_SOURCE_CHARS:
        return _compile_cached(mode, source, names, budget)
    return _compile(mode, source, names, budget)


def _compile(mode: str, source, names: tuple, budget: Budget) -> Callable:
    tree = _parse(source, mode, budget)
    validate(tree, names, budget)
    if mode == "eval":
        body = tree.body

        def run_expression(*inputs):
            env, device = _bind(names, inputs)
            with budget_module.enforce(budget, count_ops=True):
                value = _Interpreter(env, device).eval(body)
                return _output(value, "the expression", device)

        run = run_expression
    else:
        if not any(isinstance(node, ast.Return) for node in ast.walk(tree)):
            raise ProgramError("the program never returns a value: end it with 'return <tensor>'", construct="Return")
        body = tree.body

        def run_program(*inputs):
            env, device = _bind(names, inputs)
            with budget_module.enforce(budget, count_ops=True):
                signal = _Interpreter(env, device).run_block(body)
                if not isinstance(signal, _Return):
                    raise ProgramError("the program ended without reaching a return statement", construct="Return")
                return _output(signal.value, "return", device)

        run = run_program
    run.source = source
    run.input_names = names
    return run


_compile_cached = functools.lru_cache(maxsize=256)(_compile)


__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_DEPTH",
    "TENSOR_ATTRIBUTES",
    "TENSOR_METHODS",
    "ProgramError",
    "ProgramRuntimeError",
    "available_attributes",
    "available_functions",
    "available_methods",
    "compile_expr",
    "compile_program",
    "validate",
]
