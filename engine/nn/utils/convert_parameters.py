"""Parameters as one vector and back, as ``torch.nn.utils.parameters_to_vector`` and
``vector_to_parameters``."""

from __future__ import annotations

from engine import ops
from engine.autograd.function import apply
from engine.nn.utils.clip_grad import _as_list
from engine.tensor import Tensor


def parameters_to_vector(parameters):
    """Every parameter flattened and joined, in order, into one 1-D tensor (in the graph)."""
    return apply(ops.cat, ([p.reshape(-1) for p in _as_list(parameters)],), {"dim": 0})


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of vec into the parameters' data (PyTorch replaces ``.data``)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    offset = 0
    for p in _as_list(parameters):
        count = p.numel()
        p.data = vec[offset : offset + count].view_as(p).data
        offset += count
