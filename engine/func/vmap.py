"""``vmap``: a function of one sample run on a batch, with ``torch.func.vmap``'s arguments and errors.

The arguments mapped by ``in_dims`` (a prefix of the arguments' pytree:
an int, None, or nests of them) enter the function as batched tensors
(``engine.func.batching``), their mapped axis moved in front of the array;
every op on them runs once on the whole batch. The outputs (a pytree of
Tensors) leave with that axis moved to ``out_dims``; an output that does not
depend on the batch is expanded to it. ``chunk_size`` runs the batch that
many samples at a time, and ``randomness`` says what a random op does inside:
'error' (PyTorch's error), 'same' (one draw for the whole batch) or
'different' (a draw per sample).
"""

from __future__ import annotations

import functools

from engine import ops
from engine.autograd import function
from engine.func import batching
from engine.func.pytree import broadcast_prefix, tree_flatten, tree_unflatten
from engine.tensor import Tensor

__all__ = ["vmap"]

_RANDOMNESS = ("error", "different", "same")


def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` mapped over the axes ``in_dims`` of its arguments, stacking results at ``out_dims``."""
    if randomness not in _RANDOMNESS:
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got {randomness}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")

    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        name = getattr(func, "__name__", repr(func))
        flat_args, args_spec = tree_flatten(args)
        flat_in_dims = _in_dims(name, in_dims, args, args_spec, flat_args)
        size = _batch_size(name, in_dims, flat_args, flat_in_dims)
        if chunk_size is None or chunk_size >= size:
            return _run(func, name, flat_args, flat_in_dims, args_spec, kwargs, out_dims, size, randomness)
        chunks = []
        for start in range(0, size, chunk_size):
            stop = min(start + chunk_size, size)
            part = [_narrow(a, d, start, stop) if d is not None else a for a, d in zip(flat_args, flat_in_dims)]
            chunks.append(_run(func, name, part, flat_in_dims, args_spec, kwargs, out_dims, stop - start, randomness))
        return _concatenated(name, chunks, out_dims)

    return wrapped


def _in_dims(name, in_dims, args, args_spec, flat_args):
    if not isinstance(in_dims, (int, tuple)) or isinstance(in_dims, bool):
        raise ValueError(
            f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): expected `in_dims` to be int or a (potentially "
            f"nested) tuple matching the structure of inputs, got: {type(in_dims)}."
        )
    if isinstance(in_dims, int):
        flat = [in_dims] * len(flat_args)
    else:
        flat = broadcast_prefix(in_dims, args_spec)
        if flat is None:
            raise ValueError(
                f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): in_dims is not compatible with the structure of "
                f"`inputs`. in_dims has structure {tree_flatten(in_dims)[1]} but inputs has structure {args_spec}."
            )
    for value, dim in zip(flat_args, flat):
        if dim is None:
            continue
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise ValueError(
                f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for an input but in_dim must "
                "be either an integer dimension or None."
            )
        if not isinstance(value, Tensor):
            raise ValueError(
                f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for an input but the input is "
                f"of type {type(value)}. We cannot vmap over non-Tensor arguments, please use None as the "
                "respective in_dim"
            )
        ndim = value.ndim
        if not -ndim <= dim < ndim:
            raise ValueError(
                f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for some input, but that input "
                f"is a Tensor of dimensionality {ndim} so expected in_dim to satisfy -{ndim} <= in_dim < {ndim}."
            )
    return [None if d is None else d % v.ndim for v, d in zip(flat_args, flat)]


def _batch_size(name, in_dims, flat_args, flat_in_dims):
    sizes = [value.shape[d] for value, d in zip(flat_args, flat_in_dims) if d is not None]
    if not sizes:
        raise ValueError(
            f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dims={in_dims} but none of the inputs are "
            "Tensors with a dimension to map over: at least one input must be mapped."
        )
    if any(s != sizes[0] for s in sizes):
        raise ValueError(
            f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes {sizes} for the "
            "mapped dimension"
        )
    return sizes[0]


def _narrow(value, dim, start, stop):
    return value[(slice(None),) * dim + (slice(start, stop),)]


def _run(func, name, flat_args, flat_in_dims, args_spec, kwargs, out_dims, size, randomness):
    level = batching.push_level(size, randomness)
    try:
        inputs = [_enter(a, d, level) if d is not None else a for a, d in zip(flat_args, flat_in_dims)]
        out = func(*tree_unflatten(inputs, args_spec), **kwargs)
        return _leave_all(name, out, out_dims, level, size)
    finally:
        batching.pop_level()


def _enter(value, dim, level):
    """``value`` batched at ``level`` along its (per-sample) axis ``dim``: that axis moved in front of
    the per-sample axes, behind the batch axes it already has."""
    own = batching.levels_of(value)
    with batching.Physical():
        axis = len(own) + dim
        order = list(range(value._data.ndim))
        order.insert(len(own), order.pop(axis))
        moved = function.apply(ops.permute, (value,), {"dims": tuple(order)})
    return batching.as_batched(moved, (*own, level))


def _leave_all(name, out, out_dims, level, size):
    flat_out, out_spec = tree_flatten(out)
    if isinstance(out_dims, int) or out_dims is None:
        flat_dims = [out_dims] * len(flat_out)
    else:
        flat_dims = broadcast_prefix(out_dims, out_spec)
        if flat_dims is None:
            raise ValueError(
                f"vmap({name}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with the structure "
                f"of `outputs`. out_dims has structure {tree_flatten(out_dims)[1]} but outputs has structure "
                f"{out_spec}."
            )
    leaving = {}
    flat = []
    for value, dim in zip(flat_out, flat_dims):
        if dim is None:
            if isinstance(value, Tensor) and level in batching.levels_of(value):
                raise ValueError(f"vmap({name}, ...): `{name}` can not return a BatchedTensor when out_dim is None")
            flat.append(value)
            continue
        if not isinstance(value, Tensor):
            raise ValueError(
                f"vmap({name}, ...): `{name}` must only return Tensors, got type {type(value)}. Did you mean to set "
                "out_dims= to None for output?"
            )
        key = (id(value), dim)
        if key not in leaving:
            leaving[key] = _leave(value, dim, level, size)
        flat.append(leaving[key])
    return tree_unflatten(flat, out_spec)


def _leave(value, dim, level, size):
    """An output of the mapped function with this level's axis moved to (per-sample) axis ``dim``."""
    own = batching.levels_of(value)
    ndim = value._data.ndim - len(own) + 1  # per sample once this level's axis is one of them
    if not -ndim <= dim < ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {dim})")
    dim %= ndim
    with batching.Physical():
        if level not in own:  # independent of the batch: expanded to it, as PyTorch does
            value = function.apply(ops.unsqueeze, (value,), {"dim": len(own)})
            shape = list(value._data.shape)
            shape[len(own)] = size
            value = function.apply(ops.expand, (value,), {"shape": tuple(shape)})
            own = (*own, level)
        rest = tuple(x for x in own if x != level)
        axis = own.index(level)
        order = [i for i in range(value._data.ndim) if i != axis]
        order.insert(len(rest) + dim, axis)
        moved = function.apply(ops.permute, (value,), {"dims": tuple(order)})
    return batching.as_batched(moved, rest)


def _concatenated(name, chunks, out_dims):
    flat_chunks = []
    spec = None
    for chunk in chunks:
        leaves, spec = tree_flatten(chunk)
        flat_chunks.append(leaves)
    if isinstance(out_dims, int) or out_dims is None:
        flat_dims = [out_dims] * len(flat_chunks[0])
    else:
        flat_dims = broadcast_prefix(out_dims, spec)
    joined = []
    for i, dim in enumerate(flat_dims):
        if dim is None:
            joined.append(flat_chunks[0][i])
            continue
        parts = [leaves[i] for leaves in flat_chunks]
        joined.append(ops.cat(parts, dim=dim))
    return tree_unflatten(joined, spec)
