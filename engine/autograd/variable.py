"""The legacy ``Variable``: since PyTorch 0.4 a Tensor is a Variable, and ``Variable(t)`` a Tensor.

``Variable(data, requires_grad=False)`` returns a new leaf Tensor on ``data``'s
memory (PyTorch's behaviour: not ``data`` itself), asking for gradients when
told; ``isinstance(t, Variable)`` holds for every Tensor.
"""

from __future__ import annotations

from engine.tensor import Tensor


class _VariableMeta(type):
    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, Tensor)


class Variable(metaclass=_VariableMeta):
    """``Variable(tensor, requires_grad=False, volatile=False)`` -> a leaf Tensor on the same data."""

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        if data is None:
            data = Tensor([])
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        leaf = data.detach()
        if requires_grad:
            leaf.requires_grad_(True)
        return leaf
