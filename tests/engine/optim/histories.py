"""What the optimizer tests share: one fixed problem (initial weights and a gradient for every
step) and the comparison of two parameter histories, step by step."""

from __future__ import annotations

import numpy as np

STEPS = 20
SHAPES = [(3, 4), (5,)]


def problem(dtype=np.float64):
    """Initial weights and a fixed sequence of gradients (one list per step)."""
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return weights, grads


def assert_histories_close(ours, theirs, rtol, atol):
    for step, (mine, other) in enumerate(zip(ours, theirs), 1):
        for i, (a, b) in enumerate(zip(mine, other)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {step}, parameter {i}")
