"""A batch request's points in one engine pass: ``engine.func.vmap`` over each endpoint's work.

``service.compute`` runs a batch's first point on its own (it validates the request, describes
the graph and bounds the response); then, for the transforms where vmap computes what the loop
computes, this module's samples run every point in one vmapped pass, and the content's tensors
come back with the batch axis in front. The loop runs the rest instead when:

- the function cannot be vmapped: it reads a batched tensor's value into Python (``.item()``,
  ``if``/``while`` on a tensor, ``float()``...) or draws random numbers, so each point must run
  on its own (PyTorch's vmap errors say so; exactly those are caught, nothing else);
- the vmapped content's structure or shapes differ from the first point's (a result shaped
  differently is never sent);
- one point's pass would not fit ``max_live_elements`` (the loop then splits rows into chunks).

The per-sample work uses ``engine.func`` (vjp, jvp, jacrev, jacfwd, hessian, grad), which
composes with vmap; ``engine.autograd.functional`` (what the loop calls) does not.
"""

from __future__ import annotations

from collections.abc import Callable

import engine
from engine import func
from engine.func import batching
from engine.tensor import Tensor


def refused_by_vmap(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from, as a program wraps engine errors) is vmap's
    refusal of data-dependent control flow, a value read into Python, or a random draw."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, RuntimeError) and str(error) in batching.REFUSALS:
            return True
        error = getattr(error, "error", None) or error.__cause__ or error.__context__
    return False


def run(sample: Callable, tensors: list[Tensor], batched: list[bool], chunk_size: int | None):
    """``sample`` vmapped over the batched tensors' leading axis (the others shared), or None when
    vmap refuses the function. ``randomness="error"``: a random draw falls back to the loop, which
    draws each point's numbers as one request per point would."""
    in_dims = tuple(0 if b else None for b in batched)
    try:
        with engine.enable_grad():
            return func.vmap(sample, in_dims=in_dims, randomness="error", chunk_size=chunk_size)(*tensors)
    except Exception as error:
        if refused_by_vmap(error):
            return None
        raise


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _args(values):
    """torch.autograd.functional's convention: one input is a bare tensor, several a tuple."""
    return values[0] if len(values) == 1 else tuple(values)


def _argnums(count: int):
    return 0 if count == 1 else tuple(range(count))


def _vmappable(fn: Callable) -> Callable:
    """The function vmap runs: a cached plan's own, eager ops (``service.plans.PlanFunction.eager``),
    which the table's batch rules take one pass over; a compiled replay is one point's arrays."""
    return getattr(fn, "eager", fn)


def evaluate_sample(fn: Callable) -> Callable:
    fn = _vmappable(fn)
    def sample(*xs):
        with engine.no_grad():
            return {"outputs": _as_tuple(fn(*xs))}

    return sample


def grad_sample(fn: Callable, differentiated: list[int], roots: list[bool], seeds: list) -> Callable:
    """Outputs and the gradients of the inputs ``differentiated``: the vjp of the outputs that are
    roots (those the first point's backward started from), seeded as the loop seeds them (the
    request's grad_outputs, else ones); the other outputs contribute nothing."""
    fn = _vmappable(fn)

    def sample(*xs):
        def of_differentiated(*chosen):
            full = list(xs)
            for index, value in zip(differentiated, chosen):
                full[index] = value
            return _as_tuple(fn(*full))

        outputs, pull = func.vjp(of_differentiated, *(xs[i] for i in differentiated))
        cotangents = tuple(
            (seed if seed is not None else engine.ones_like(out)) if root else engine.zeros_like(out)
            for out, root, seed in zip(outputs, roots, seeds))
        grads = pull(cotangents)
        # by input position (vmap returns tensors only; the service names them, None for the rest)
        return {"outputs": tuple(o.detach() for o in outputs), "grads": dict(zip(differentiated, grads))}

    return sample


def matrix_sample(fn: Callable, transform: str, forward_mode: bool) -> Callable:
    """``jacobian`` (jacfwd for the forward-mode strategy, else jacrev) or ``hessian`` at a point,
    with the outputs; nested as torch.autograd.functional nests them."""
    fn = _vmappable(fn)

    def sample(*xs):
        argnums = _argnums(len(xs))
        if transform == "hessian":
            matrix = func.hessian(fn, argnums)(*xs)
        else:
            matrix = (func.jacfwd if forward_mode else func.jacrev)(fn, argnums)(*xs)
        with engine.no_grad():
            outputs = _as_tuple(fn(*xs))
        return {"outputs": outputs, transform: matrix}

    return sample


def product_sample(fn: Callable, name: str, v) -> Callable:
    """vjp / jvp / hvp / vhp at a point with the shared ``v`` (None: ones, for one scalar): hvp is
    the jvp of the gradient (forward-over-reverse), vhp its vjp (reverse-over-reverse), as the
    loop's ``torch.autograd.functional`` computes them."""
    fn = _vmappable(fn)

    def sample(*xs):
        count = len(xs)
        vs = None if v is None else _as_tuple(v) if count > 1 or name == "vjp" else (v,)
        if name == "vjp":
            outputs, pull = func.vjp(fn, *xs)
            cotangent = v if v is not None else engine.ones_like(outputs)
            result = _args(_as_tuple(pull(cotangent)))
        elif name == "jvp":
            outputs, result = func.jvp(fn, xs, vs if vs is not None else tuple(engine.ones_like(x) for x in xs))
        else:
            gradient = func.grad(fn, _argnums(count))
            if vs is None:
                vs = tuple(engine.ones_like(x) for x in xs)
            if name == "hvp":
                _, result = func.jvp(gradient, xs, vs)
            else:
                _, pull = func.vjp(gradient, *xs)
                result = _args(_as_tuple(pull(vs if count > 1 else vs[0])))
            with engine.no_grad():
                outputs = fn(*xs)
        return {"outputs": _as_tuple(outputs), name: result}

    return sample


def matching(first, batched, size: int):
    """``batched`` where its structure is the first point's, each tensor of shape ``(size, *first's)``
    and dtype; None where the first point has None (an input the function does not use); raises
    ``ShapeMismatchError`` otherwise."""
    if first is None:
        return None
    if isinstance(first, Tensor):
        if not isinstance(batched, Tensor) or tuple(batched.shape) != (size, *first.shape) \
                or batched.dtype != first.dtype:
            raise ShapeMismatchError
        return batched.detach()
    if isinstance(first, (tuple, list)):
        if not isinstance(batched, (tuple, list)) or len(batched) != len(first):
            raise ShapeMismatchError
        return tuple(matching(f, b, size) for f, b in zip(first, batched))
    if isinstance(first, dict):
        if not isinstance(batched, dict) or set(batched) != set(first):
            raise ShapeMismatchError
        return {key: matching(first[key], batched[key], size) for key in first}
    raise ShapeMismatchError


class ShapeMismatchError(Exception):
    """The vmapped content is not shaped as the loop's would be: the loop runs instead."""
