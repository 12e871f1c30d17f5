"""What an entry of the derivative table is, and how its rules are called.

An ``Op`` bundles one primitive's forward, its vjp rules (one per input) and
its jvp rule. Rules name what they need by their parameter names, drawn from a
fixed vocabulary: ``g`` (incoming gradient), ``out`` (the result), the
forward's own input names (``x``, ``y``, ``cond``, ``xs``...), tangents
``d<name>`` (``dx``, ``dy``), and the op's keyword-only parameters. From those
names the machinery knows what to save for backward and which saved tensors
must not have been modified in place; it never needs to know which op it runs.

An ``Op`` is also callable: on plain arrays it runs the forward directly, on
Tensors it goes through autograd. Rules are written with these callables, so
one rule serves both a plain backward (arrays, fast) and ``create_graph=True``
(Tensors, recorded, differentiable again).

An ``Op`` also declares its public surface: the ``engine.<fn>`` functions and
Tensor methods (out of place and in place) that run it, whether clients may
call it, and how large its result can be (``estimate``, for the budgets).
``engine.tensor`` and ``engine.functions`` generate the simple variants from
these declarations and check that the hand-written ones exist.
"""

from __future__ import annotations

import inspect
from operator import itemgetter

from engine import backend

# Bound by engine.wiring.connect() when the engine is imported (both modules import this one):
# the Tensor class, for the dispatch in Op.__call__, and what runs an Op on Tensors, recording it.
tensor_type: type = type(None)
tensor_apply = None  # engine.autograd.function.apply

# Names the rules may use besides inputs, tangents and parameters.
GRAD, RESULT = "g", "out"


def numel(shape) -> int:
    total = 1
    for n in shape:
        total *= int(n)
    return total


def broadcast_numel(shapes) -> int:
    """Elements of the broadcast of ``shapes`` (an upper bound if they do not broadcast)."""
    ndim = max((len(s) for s in shapes), default=0)
    total = 1
    for axis in range(1, ndim + 1):
        total *= max((int(s[-axis]) for s in shapes if len(s) >= axis), default=1)
    return total


def broadcast_size(shapes, params):
    """The default ``estimate`` of a broadcasting op: its inputs' broadcast (None for one input)."""
    return broadcast_numel(shapes) if len(shapes) > 1 else None


def total_size(shapes, params):
    """The default ``estimate`` of a variadic op (cat, stack): all its inputs together."""
    return sum(numel(s) for s in shapes)


def _names(declared) -> tuple[str, ...]:
    """A variant declaration (a name, several names, or none) as a tuple of names."""
    if not declared:
        return ()
    return (declared,) if isinstance(declared, str) else tuple(declared)


def _positional_names(fn) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _takes_params(fn) -> bool:
    return any(
        p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in inspect.signature(fn).parameters.values()
    )


def _caller(fn, indices, takes_params):
    """``(values, params) -> fn(picked values..., **params)``, specialised for the common
    arities: this call sits on the hot path of every backward node."""
    if takes_params:
        pick = itemgetter(*indices) if len(indices) > 1 else None
        if len(indices) == 1:
            (i,) = indices
            return lambda values, params: fn(values[i], **params)
        if not indices:
            return lambda values, params: fn(**params)
        return lambda values, params: fn(*pick(values), **params)
    if len(indices) == 1:
        (i,) = indices
        return lambda values, params: fn(values[i])
    if len(indices) == 2:
        i, j = indices
        return lambda values, params: fn(values[i], values[j])
    if len(indices) == 3:
        i, j, k = indices
        return lambda values, params: fn(values[i], values[j], values[k])
    pick = itemgetter(*indices) if indices else (lambda values: ())
    return lambda values, params: fn(*pick(values))


class Rule:
    """A vjp or jvp rule bound to its calling convention.

    ``call(values, params)`` picks the rule's arguments from the vector the
    machinery passes (``[g, out, *inputs]`` for a vjp, ``[*tangents, out,
    *inputs]`` for a jvp); params are passed only when the rule declares
    keyword parameters.
    """

    __slots__ = ("call", "fn", "names")

    def __init__(self, fn, vocabulary: list[str], op_name: str):
        self.fn = fn
        self.names = _positional_names(fn)
        unknown = [n for n in self.names if n not in vocabulary]
        if unknown:
            raise TypeError(f"rule of {op_name} uses {unknown}, not in its vocabulary {vocabulary}")
        indices = [vocabulary.index(n) for n in self.names]
        self.call = _caller(fn, indices, _takes_params(fn))

    def __call__(self, values, params):
        return self.call(values, params)


class LinearJvp:
    """The jvp of a linear op: the op itself, applied to the tangents."""

    __slots__ = ("count", "op")

    def __init__(self, op):
        self.op = op
        self.count = 1 if op.variadic else op.arity

    def __call__(self, values, params):
        return self.op(*values[: self.count], **params)


class Op:
    """One primitive of the derivative table.

    forward(xp, *inputs, **params) computes the result on arrays. ``vjp`` is a
    tuple with one rule per input (``None`` where no gradient flows), or for a
    variadic op a single rule returning a list. ``jvp`` is one rule returning
    the output tangent. Flags replace copy-paste:

    - ``linear``: the op is linear in its inputs, so its jvp is the forward
      applied to the tangents (after padding missing ones with zeros);
    - ``broadcast``: elementwise with numpy broadcasting; the machinery sums
      each input's gradient back to that input's shape;
    - ``nondiff``: the output carries no gradient (comparisons, sign);
    - ``view``: the output aliases the first input's memory (unless the op had to
      copy), so they share a version counter, as PyTorch's views do, and in-place
      ops on the output write through to the base (``engine.autograd.inplace``);

    ``normalize(params, *shapes)`` (optional) rewrites axis parameters to
    negative form and validates them, so rules stay correct when tangents and
    cotangents carry extra leading batch axes.

    The surface, as PyTorch's ``native_functions.yaml`` declares it (each a
    name or a tuple of names; none by default):

    - ``function``: ``engine.<name>`` functions that run the op (``"sin"``,
      aliases such as ``("mul", "multiply")``; an in-place one such as
      ``"sin_"`` must also be an ``inplace`` method, which it calls);
    - ``method``: Tensor methods that run it out of place (``x.sin()``);
    - ``inplace``: Tensor methods that run it in place (``x.sin_()``);
    - ``public``: whether clients may call it (programs through its function
      and method variants, JSON graphs by its name); internal ops such as
      adjoints and device moves say ``public=False``;
    - ``batch``: how ``vmap`` runs the op (``engine.func.batching``): None when
      its forward takes leading batch axes once its axes are normalized (the
      default), a rule ``batch(*inputs, nbatch=, **params)`` on inputs carrying
      ``nbatch`` leading batch axes, or ``"loop"``: once per sample;
    - ``estimate(shapes, params)``: the result's element count from the
      inputs' shapes and the normalized params alone, for ops whose result can
      be larger than every input (the budget checks it before the op runs).
      Broadcasting ops default to the broadcast size and variadic ops to the
      total; every other op's result is no larger than an input.

    Several ops may declare one name (``x.pow`` runs ``pow`` or ``pow_scalar``):
    the variant then chooses among them, written by hand.
    """

    def __init__(
        self,
        name,
        forward,
        vjp=None,
        jvp=None,
        *,
        grad_fn=None,
        doc="",
        linear=False,
        broadcast=False,
        nondiff=False,
        view=False,
        variadic=False,
        extra_outputs=0,
        normalize=None,
        function=(),
        method=(),
        inplace=(),
        public=True,
        estimate=None,
        batch=None,
    ):
        self.name = name
        self.forward = forward
        self.doc = doc
        self.linear = linear
        self.broadcast = broadcast
        self.nondiff = nondiff
        self.view = view
        self.variadic = variadic
        self.extra_outputs = extra_outputs
        self.normalize = normalize
        self.functions = _names(function)
        self.methods = _names(method)
        self.inplace = _names(inplace)
        misnamed = [n for n in self.inplace if not n.endswith("_")]
        misnamed += [n for n in self.functions if n.endswith("_") and n not in self.inplace]
        if misnamed:
            raise TypeError(f"{name}: in-place variants end in '_' and are Tensor methods; check {misnamed}")
        self.public = public
        if estimate is None:
            estimate = broadcast_size if broadcast else total_size if variadic else None
        self.estimate = estimate
        self.batch = batch
        signature = inspect.signature(forward)
        params = list(signature.parameters.values())[1:]  # drop xp
        self.input_names = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        self.param_defaults = {
            p.name: (None if p.default is p.empty else p.default) for p in params if p.kind == p.KEYWORD_ONLY
        }
        self.required_params = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
        # Optional params with their defaults: apply fills in those a caller left out, so the
        # rules (which name every param) see them too.
        self.optional_params = {n: v for n, v in self.param_defaults.items() if n not in self.required_params}
        self.arity = None if variadic else len(self.input_names)
        camel = "".join(part.capitalize() for part in name.split("_"))
        self.grad_fn = grad_fn or f"{camel}Backward0"

        # ``<input>_shape`` and ``out_shape``: a shape only, so backward neither keeps the tensor
        # alive nor checks its version (PyTorch saves just the sizes there too: sum, reshape, ...).
        vjp_vocabulary = [
            GRAD, RESULT, *self.input_names, *(n + "_shape" for n in self.input_names), RESULT + "_shape",
        ]
        if nondiff:
            self.vjp = ()
        elif variadic:
            self.vjp = Rule(vjp, vjp_vocabulary, name) if vjp is not None else None
        else:
            rules = vjp if isinstance(vjp, tuple) else (vjp,)
            if vjp is not None and len(rules) != self.arity:
                raise TypeError(f"{name}: {len(rules)} vjp rules for {self.arity} inputs")
            self.vjp = tuple(Rule(r, vjp_vocabulary, name) if r is not None else None for r in rules)
        # Which of out and the inputs backward needs: those the vjp rules name.
        needed = set()
        for rule in (self.vjp,) if variadic else self.vjp:
            if rule is not None:
                needed.update(rule.names)
        self.saves_out = RESULT in needed
        self.saved_inputs = tuple(i for i, n in enumerate(self.input_names) if n in needed)
        self.keeps_input = tuple(n in needed for n in self.input_names)
        self.node_cls = None  # the grad_fn class, filled in on first use by autograd

        tangent_names = ["d" + n for n in self.input_names]
        if jvp is None and linear:
            self.jvp = LinearJvp(self)
        else:
            self.jvp = Rule(jvp, [*tangent_names, RESULT, *self.input_names], name) if jvp else None

    @property
    def generic(self) -> bool:
        """Whether a variant can be generated: the op takes one or two tensors and no parameters,
        so ``x.mul(y)`` is just the op on ``(x, y)``."""
        return not self.param_defaults and not self.variadic and not self.extra_outputs and self.arity in (1, 2)

    def grad_fn_name(self, params, shapes) -> str:
        return self.grad_fn(params, shapes) if callable(self.grad_fn) else self.grad_fn

    def __call__(self, *args, **params):
        """Run the op: on arrays directly, on Tensors through autograd."""
        first = args[0]
        if self.variadic:
            if any(isinstance(a, tensor_type) for a in first):
                return tensor_apply(self, args, params)
            return self.forward(backend.namespace_of(first[0]), *args, **params)
        for a in args:
            if isinstance(a, tensor_type):
                return tensor_apply(self, args, params)
        # On arrays only rules and jvps call ops, with parameters already normalized.
        xp = backend.namespace_of(first)
        return self.forward(xp, *args, **params)

    def __repr__(self) -> str:
        return f"<op {self.name}>"


class Table(dict):
    """name -> Op, filled by ``engine.ops`` as its entries are defined."""

    def define(self, name, forward, vjp=None, jvp=None, **flags) -> Op:
        if name in self:
            raise ValueError(f"op {name} defined twice")
        op = Op(name, forward, vjp, jvp, **flags)
        self[name] = op
        return op

    def variants(self, kind: str) -> dict[str, list[Op]]:
        """Declared variant name -> the ops declaring it, for ``kind`` "functions", "methods" or
        "inplace". Several ops share a name where the variant chooses among them (``x.max()``,
        ``x.max(0)``, ``x.max(y)``); the op of that name, if any, comes first."""
        found: dict[str, list[Op]] = {}
        for op in self.values():
            for name in getattr(op, kind):
                found.setdefault(name, []).append(op)
        for name, declaring in found.items():
            declaring.sort(key=lambda op: op.name != name)
        return found

    def missing_variants(self, kind: str, existing, generate, where: str) -> dict:
        """The declared ``kind`` variants not in ``existing`` (the names written by hand), each made
        by ``generate(name, op)``. ``op`` is the op to run when the name is a plain call of it: one
        generic op (``Op.generic``) declares the name alone, and none of that op's other names is
        written by hand (an alias of a hand-written variant takes its arguments); else None.
        ``generate`` returns None for a name it cannot make; then it must be written in ``where``."""
        declared = self.variants(kind)
        made = {}
        for name, declaring in declared.items():
            if name in existing:
                continue
            op = declaring[0] if len(declaring) == 1 and declaring[0].generic else None
            if op is not None and any(n in existing for n in getattr(op, kind) if declared[n] == [op]):
                op = None
            made[name] = generate(name, op)
            if made[name] is None:
                raise TypeError(
                    f"{name} (declared by {', '.join(o.name for o in declaring)}) translates PyTorch's "
                    f"arguments into the op: write it by hand in {where}"
                )
        return made
