"""nn layers: Conv2d forward + backward (batch 32, 3x32x32 -> 16 channels, 3x3, padding 1), and a
small CNN block (conv, batch norm, ReLU, max pool) against PyTorch CPU on one thread. Target
(issue 17): the Conv2d row within 2x PyTorch.
"""

from __future__ import annotations

import numpy as np

import engine
from bench.timing import Table, fmt_time, optional_torch, per_call_seconds, ratio

BATCH, CHANNELS, SIZE, OUT, KERNEL = 32, 3, 32, 16, 3


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, CHANNELS, SIZE, SIZE)).astype(np.float32)
    w = (rng.standard_normal((OUT, CHANNELS, KERNEL, KERNEL)) * 0.2).astype(np.float32)
    b = rng.standard_normal(OUT).astype(np.float32)
    return x, w, b


def conv2d(lib, x, w, b):
    x, w, b = (lib.tensor(a, requires_grad=True) for a in (x, w, b))

    def step():
        x.grad = w.grad = b.grad = None
        lib.nn.functional.conv2d(x, w, b, padding=1).sum().backward()

    return step


def cnn_block(lib, x, w, b):
    x, w, b = (lib.tensor(a, requires_grad=True) for a in (x, w, b))
    functional = lib.nn.functional

    def step():
        x.grad = w.grad = b.grad = None
        conv = functional.conv2d(x, w, b, padding=1)
        out = functional.max_pool2d(functional.relu(functional.batch_norm(conv, None, None, training=True)), 2)
        out.sum().backward()

    return step


def _check_same_gradient(torch, x, w, b) -> None:
    """The figures only mean something if both compute the same thing."""
    ours = [engine.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    engine.nn.functional.conv2d(*ours, padding=1).pow(2).sum().backward()
    torch.nn.functional.conv2d(*theirs, padding=1).pow(2).sum().backward()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-3, atol=1e-2)


def run() -> list[Table]:
    torch = optional_torch()
    x, w, b = _inputs()
    if torch:
        _check_same_gradient(torch, x, w, b)
    table = Table("nn layers (CPU, float32; PyTorch on 1 thread)",
                  ["case", "gradserve", "PyTorch (1 thread)", "vs PyTorch"])
    for name, make in ((f"Conv2d fwd+bwd ({BATCH}x{CHANNELS}x{SIZE}x{SIZE} -> {OUT}, {KERNEL}x{KERNEL})", conv2d),
                       ("conv + batch norm + ReLU + max pool fwd+bwd (same sizes)", cnn_block)):
        t_ours = per_call_seconds(make(engine, x, w, b))
        t_torch = per_call_seconds(make(torch, x, w, b)) if torch else None
        table.add(name, fmt_time(t_ours), fmt_time(t_torch), ratio(t_ours, t_torch))
    return [table]
