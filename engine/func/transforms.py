"""engine.func: composable transforms with ``torch.func``'s names (grad, vjp, jvp, jacrev, jacfwd, hessian).

Each transform returns a function. They are thin wrappers over
``engine.autograd.functional`` (same batched machinery), with ``argnums``
choosing which positional arguments are differentiated (an int, or a tuple
for a tuple of results) and ``has_aux`` letting ``func`` return
``(output, aux)``.

They compose: a transform called on arguments that already carry
derivatives for an enclosing transform (they require grad, or have a
forward-mode tangent) builds its result differentiably, so
``jacrev(jacrev(f))``, ``jacfwd(jacrev(f))``, ``jacrev(jacfwd(f))`` and
``grad(grad(f))`` work. Forward mode does not nest in forward mode
(``jacfwd(jacfwd(f))``), as dual levels do not nest. There is no ``vmap``:
batching here lives inside the rules (leading batch axes), not as a
user-facing transform.
"""

from __future__ import annotations

import contextlib

from engine.autograd import forward_ad, functional
from engine.autograd.grad_mode import enable_grad, is_grad_enabled
from engine.tensor import Tensor

__all__ = ["grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "vjp"]


def _carries_derivatives(tensors) -> bool:
    """Whether an enclosing transform differentiates through these tensors."""
    return any((is_grad_enabled() and t.requires_grad) or forward_ad._tangent(t) is not None for t in tensors)


class _Selection:
    """``func`` as a function of the arguments picked by ``argnums`` (the others held fixed)."""

    def __init__(self, func, args, argnums, has_aux):
        self.is_tuple = isinstance(argnums, tuple)
        self.argnums = argnums if self.is_tuple else (argnums,)
        for n in self.argnums:
            if not -len(args) <= n < len(args):
                raise RuntimeError(f"Got argnums={argnums} but only {len(args)} positional inputs")
            if not isinstance(args[n], Tensor):
                raise RuntimeError(f"Expected the argument at argnums={n} to be a Tensor, got {type(args[n]).__name__}")
        self.func, self.args, self.has_aux = func, list(args), has_aux
        self.selected = tuple(args[n] for n in self.argnums)
        self.aux = None

    @property
    def inputs(self):
        return self.selected if self.is_tuple else self.selected[0]

    def __call__(self, *chosen):
        args = list(self.args)
        for n, value in zip(self.argnums, chosen):
            args[n] = value
        result = self.func(*args)
        if self.has_aux:
            if not isinstance(result, tuple) or len(result) != 2:
                raise RuntimeError("has_aux=True: the function must return a tuple (output, aux)")
            result, self.aux = result
        return result

    def finish(self, value):
        if not self.has_aux:
            return value
        aux = self.aux
        if isinstance(aux, Tensor) and not _carries_derivatives(self.selected):
            aux = aux.detach()
        return value, aux


def grad_and_value(func, argnums=0, has_aux=False):
    """``(gradient, value)`` of a scalar ``func`` with respect to the arguments ``argnums``."""

    def wrapper(*args):
        selection = _Selection(func, args, argnums, has_aux)
        differentiable = _carries_derivatives(selection.selected)

        def scalar(*chosen):
            out = selection(*chosen)
            if not isinstance(out, Tensor) or out.numel() != 1:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise RuntimeError(f"grad(f)(*args): Expected f(*args) to return a scalar Tensor, got {shape}")
            return out

        value, gradient = functional.vjp(scalar, selection.inputs, create_graph=differentiable)
        return (gradient, selection.finish(value)) if has_aux else (gradient, value)

    return wrapper


def grad(func, argnums=0, has_aux=False):
    """The gradient of a scalar ``func`` with respect to the arguments ``argnums``."""
    both = grad_and_value(func, argnums, has_aux)

    def wrapper(*args):
        gradient, value = both(*args)
        return (gradient, value[1]) if has_aux else gradient

    return wrapper


def vjp(func, *primals, has_aux=False):
    """``(func(*primals), vjp_fn)``; ``vjp_fn(cotangents)`` returns one gradient per primal."""
    differentiable = _carries_derivatives(primals)
    with enable_grad():
        inputs = functional._grad_preprocess(primals, differentiable, need_graph=True)
        result = func(*inputs)
        aux = None
        if has_aux:
            result, aux = result
        is_tuple, outputs = functional._as_tuple(result, "outputs of the user-provided function", "vjp")

    def vjp_fn(cotangents):
        _, cotangents = functional._as_tuple(cotangents, "cotangents", "vjp")
        functional._validate_v(cotangents, outputs, is_tuple)
        with enable_grad() if differentiable else contextlib.nullcontext():
            grads = functional._grad_of_differentiable(outputs, inputs, cotangents, differentiable,
                                                       retain_graph=True)
        return functional._grad_postprocess(functional._fill_in_zeros(grads, inputs, False, differentiable, "back"),
                                            differentiable)

    outputs_out = functional._tuple_postprocess(functional._grad_postprocess(outputs, differentiable), is_tuple)
    return (outputs_out, vjp_fn, aux) if has_aux else (outputs_out, vjp_fn)


def jvp(func, primals, tangents, *, has_aux=False):
    """``(func(*primals), J tangents)`` by forward mode; ``primals`` and ``tangents`` are tuples."""
    if not isinstance(primals, tuple) or not isinstance(tangents, tuple):
        raise RuntimeError("jvp(f, primals, tangents): Expected primals and tangents to be tuples")
    selection = _Selection(func, primals, tuple(range(len(primals))), has_aux)
    out, product = functional.jvp(selection, primals, tangents, create_graph=_carries_derivatives(primals))
    return (out, product, selection.aux) if has_aux else (out, product)


def jacrev(func, argnums=0, *, has_aux=False, chunk_size=None):
    """The Jacobian by reverse mode (all rows in one batched backward, ``chunk_size`` at a time)."""
    return _jacobian_transform(func, argnums, has_aux, chunk_size, "reverse-mode")


def jacfwd(func, argnums=0, has_aux=False, *, chunk_size=None):
    """The Jacobian by forward mode (all columns in one batched forward pass)."""
    return _jacobian_transform(func, argnums, has_aux, chunk_size, "forward-mode")


def _jacobian_transform(func, argnums, has_aux, chunk_size, strategy):
    def wrapper(*args):
        selection = _Selection(func, args, argnums, has_aux)
        jac = functional.jacobian(selection, selection.inputs, create_graph=_carries_derivatives(selection.selected),
                                  strategy=strategy, chunk_size=chunk_size)
        return selection.finish(jac)

    return wrapper


def hessian(func, argnums=0):
    """The Hessian of a scalar ``func``: forward-over-reverse (``jacfwd(jacrev(func))``)."""

    def wrapper(*args):
        selection = _Selection(func, args, argnums, False)
        if _carries_derivatives(selection.selected):
            return jacfwd(jacrev(func, argnums), argnums)(*args)
        return functional.hessian(selection, selection.inputs)

    return wrapper
