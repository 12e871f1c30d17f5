"""``leaf``: the float64 tensors that require grad, which the autograd tests start from."""

from __future__ import annotations

import engine


def leaf(values, dtype=engine.float64):
    return engine.tensor(values, dtype=dtype, requires_grad=True)
