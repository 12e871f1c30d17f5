"""Signatures: which calls of a compiled function may share a plan.

A call's signature is, for every tensor argument, its shape, dtype, array type
(host or device), device and requires_grad; every other argument by value
(hashed; containers of numbers become tuples); whether grad mode is on; and,
for a module, every submodule's ``training`` flag and the identity of its
parameters and buffers (replacing a parameter object makes a new signature).
What may change between calls with one signature is the tensors' values, and
the captured tensors' values; their shapes are guarded at each replay
(``Plan.captured_matches``), and values reaching Python by the plan's guard
steps.
"""

from __future__ import annotations

from engine import backend
from engine.autograd import grad_mode
from engine.tensor import Tensor

_grad_enabled = grad_mode._grad_enabled.get
_ndarray = backend.ndarray


class UnsupportedArgumentError(Exception):
    """An argument a signature cannot describe (the call runs eagerly, saying why)."""


def _value_key(value):
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_value_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _value_key(v)) for k, v in value.items())))
    if isinstance(value, Tensor):
        raise UnsupportedArgumentError("a tensor inside a list, tuple or dict argument (pass tensors as arguments)")
    try:
        hash(value)
    except TypeError:
        raise UnsupportedArgumentError(f"an argument of type {type(value).__name__} that cannot be hashed") from None
    return (type(value), value)


def signature(flat, names):
    """The key of one call: ``flat`` is the positional then keyword arguments, ``names`` the
    keyword names."""
    key = [names, _grad_enabled()]
    for value in flat:
        if isinstance(value, Tensor):
            data = value._data
            if type(data) is _ndarray:
                key.append((data.shape, data.dtype, value._requires_grad))
            else:
                key.append((data.shape, data.dtype, value._requires_grad, type(data), str(backend.device_of(data))))
        else:
            key.append(_value_key(value))
    return tuple(key)


def module_state(modules):
    """The Python-side state of a module that changes what its forward computes."""
    state = []
    for module in modules:
        state.append(module.training)
        state.extend(map(id, module._parameters.values()))
        state.extend(map(id, module._buffers.values()))
    return tuple(state)


def describe(key):
    """A short description of a signature, for ``explain()``."""
    parts = []
    for entry in key[2:]:
        if isinstance(entry, tuple) and len(entry) >= 3 and isinstance(entry[0], tuple):
            grad = ", requires_grad" if entry[2] else ""
            parts.append(f"Tensor{list(entry[0])} {entry[1]}{grad}")
        elif isinstance(entry, tuple) and len(entry) == 2:
            parts.append(repr(entry[1]))
        else:
            parts.append(repr(entry))
    return "(" + ", ".join(parts) + ")"
