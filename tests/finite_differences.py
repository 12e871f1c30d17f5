"""Float64 central differences: the one numerical derivative the tests hold gradients to.

``fn`` takes a list of float64 numpy arrays and returns an array or a tuple of
arrays; ``on_tensors`` turns a function of engine tensors into one. The
engine's autograd differentiates nothing here (``engine.autograd.gradcheck``
has its own differences, and is itself under test). With ``eps = 1e-6`` the truncation
error, O(eps^2) times the third derivative, and the rounding error, about
1e-16 |f| / eps, are both near 1e-10: far inside the tests' tolerances.
"""

from __future__ import annotations

import numpy as np

import engine

EPS = 1e-6


def directional_derivative(fn, arrays, tangents, eps=EPS):
    """J u = (fn(x + eps u) - fn(x - eps u)) / (2 eps), with one tangent u per array.

    An array, or a list of arrays (one per output) where ``fn`` returns a tuple.
    """
    xs = [np.asarray(x, dtype=np.float64) for x in arrays]
    plus = fn([np.asarray(x + eps * u) for x, u in zip(xs, tangents)])
    minus = fn([np.asarray(x - eps * u) for x, u in zip(xs, tangents)])
    if isinstance(plus, tuple):
        return [_difference(p, m, eps) for p, m in zip(plus, minus)]
    return _difference(plus, minus, eps)


def jacobian(fn, arrays, eps=EPS):
    """d fn / d arrays, one unit tangent at a time: ``result[i][j]`` is d output i / d arrays[j],
    of shape ``output_i.shape + arrays[j].shape``. A single output counts as a tuple of one."""
    xs = [np.asarray(x, dtype=np.float64) for x in arrays]
    base = fn(xs)
    shapes = [np.shape(o) for o in (base if isinstance(base, tuple) else (base,))]
    result = [[np.zeros(shape + x.shape) for x in xs] for shape in shapes]
    for j, x in enumerate(xs):
        for index in np.ndindex(x.shape):
            tangents = [np.zeros(a.shape) for a in xs]
            tangents[j][index] = 1.0
            derivative = directional_derivative(fn, xs, tangents, eps)
            for i, column in enumerate(derivative if isinstance(derivative, list) else [derivative]):
                result[i][j][(Ellipsis, *index)] = column
    return result


def on_tensors(fn):
    """``fn`` of engine tensors as a function of float64 arrays, run under no_grad (the differences
    never need a graph): each array becomes a tensor, each resulting tensor an array."""

    def on_arrays(arrays):
        with engine.no_grad():
            out = fn(*(engine.tensor(x) for x in arrays))
        if isinstance(out, tuple):
            return tuple(o.numpy() for o in out)
        return out.numpy()

    return on_arrays


def _difference(plus, minus, eps):
    return (np.asarray(plus, dtype=np.float64) - np.asarray(minus, dtype=np.float64)) / (2 * eps)

