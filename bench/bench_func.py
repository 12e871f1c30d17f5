"""engine.func under vmap against PyTorch's torch.func, in the same run.

- Per-sample gradients, batch 64: ``vmap(grad(loss), in_dims=(None, 0, 0))``
  over a small MLP's parameters (a dict) through ``functional_call``
  (784 -> 128 -> 10, tanh, mean-squared error), against the same with
  ``torch.func``; and, as the baseline both transforms replace, a Python
  loop of 64 ordinary backward passes in the engine.
- Per-sample gradients of a small CNN, batch 64 (the issue's row): Conv2d(1, 8, 3), ReLU,
  MaxPool2d(2), Flatten, Linear(1352, 10) on 1x28x28 images, mean-squared error, the same
  ``vmap(grad)`` through ``functional_call``, against ``torch.func``.
- A batched Jacobian: ``vmap(jacrev(f))`` of ``f(x) = tanh(W @ x)`` (W 64 x 32)
  over a batch of 64 points, against ``torch.func``.

Each workload's results are checked against PyTorch's before timing (float32,
tolerance 1e-4 relative). PyTorch runs on one thread; the engine with its own
BLAS setting (what ``import engine`` gives).
"""

from __future__ import annotations

import numpy as np

import engine
from bench.timing import Table, engine_threads, fmt_time, optional_torch, per_call_seconds, ratio
from engine import func

BATCH = 64
SIZES = (784, 128, 10)


def _mlp(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(SIZES[0], SIZES[1]), lib.nn.Tanh(), lib.nn.Linear(SIZES[1], SIZES[2]))


def _cnn(lib):
    lib.manual_seed(0)
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10))


def _per_sample_gradients(torch, build, x: np.ndarray, y: np.ndarray, *, loop: bool = False):
    """Seconds per call of ``vmap(grad(loss))`` over the model ``build(lib)`` makes, ours and
    torch.func's (None without torch), and with ``loop`` a Python loop of ordinary backward
    passes (else None). With torch, both models start from PyTorch's weights and the results
    are compared before anything is timed."""
    model = build(engine)
    reference = None
    if torch is not None:  # PyTorch's initial weights, so the two results can be compared
        reference = build(torch)
        for p, q in zip(model.parameters(), reference.parameters()):
            p.data = engine.tensor(q.detach().numpy())
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return ((func.functional_call(model, p, (xi.unsqueeze(0),)) - yi) ** 2).mean()

    per_sample = func.vmap(func.grad(loss), in_dims=(None, 0, 0))
    inputs, targets = engine.tensor(x), engine.tensor(y)
    ours = per_call_seconds(lambda: per_sample(params, inputs, targets))

    def backward_passes():
        grads = []
        for i in range(BATCH):
            model.zero_grad()
            ((model(inputs[i : i + 1]) - targets[i]) ** 2).mean().backward()
            grads.append([p.grad for p in model.parameters()])
        return grads

    looped = per_call_seconds(backward_passes, repeat=3) if loop else None
    theirs = None
    if torch is not None:
        torch_params = {k: v.detach() for k, v in reference.named_parameters()}

        def torch_loss(p, xi, yi):
            return ((torch.func.functional_call(reference, p, (xi.unsqueeze(0),)) - yi) ** 2).mean()

        torch_per_sample = torch.func.vmap(torch.func.grad(torch_loss), in_dims=(None, 0, 0))
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        expected = torch_per_sample(torch_params, tx, ty)
        got = per_sample(params, inputs, targets)
        for k in expected:
            assert np.allclose(got[k].numpy(), expected[k].numpy(), rtol=1e-4, atol=1e-6), f"per-sample {k}"
        theirs = per_call_seconds(lambda: torch_per_sample(torch_params, tx, ty))
    return ours, theirs, looped


def _batched_jacobian(torch):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((64, 32)) / np.sqrt(32)).astype(np.float32)
    x = rng.standard_normal((BATCH, 32)).astype(np.float32)
    weight, points = engine.tensor(w), engine.tensor(x)
    jacobians = func.vmap(func.jacrev(lambda v: engine.tanh(weight @ v)))
    ours = per_call_seconds(lambda: jacobians(points))
    theirs = None
    if torch is not None:
        tw = torch.from_numpy(w)
        torch_jacobians = torch.func.vmap(torch.func.jacrev(lambda v: torch.tanh(tw @ v)))
        tx = torch.from_numpy(x)
        assert np.allclose(jacobians(points).numpy(), torch_jacobians(tx).numpy(), rtol=1e-4, atol=1e-6)
        theirs = per_call_seconds(lambda: torch_jacobians(tx))
    return ours, theirs


def run() -> list[Table]:
    torch = optional_torch()
    table = Table(
        f"engine.func under vmap vs torch.func (float32, batch {BATCH}; the engine's {engine_threads()} BLAS "
        "thread(s), PyTorch on 1)",
        ["workload", "ours", "torch.func", "ours / torch.func", "loop of backward passes (ours)"],
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.standard_normal((BATCH, SIZES[2])).astype(np.float32)
    ours, theirs, looped = _per_sample_gradients(torch, _mlp, x, y, loop=True)
    table.add("per-sample gradients, MLP 784-128-10, vmap(grad)", fmt_time(ours), fmt_time(theirs),
              ratio(ours, theirs), fmt_time(looped))
    rng = np.random.default_rng(2)
    images = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.standard_normal((BATCH, 10)).astype(np.float32)
    ours, theirs, _ = _per_sample_gradients(torch, _cnn, images, y)
    table.add("per-sample gradients, CNN conv3x3(8)-pool-linear, 1x28x28, vmap(grad)", fmt_time(ours),
              fmt_time(theirs), ratio(ours, theirs), "n/a")
    ours, theirs = _batched_jacobian(torch)
    table.add("batched Jacobian of tanh(W @ x), W 64x32, vmap(jacrev)", fmt_time(ours), fmt_time(theirs),
              ratio(ours, theirs), "n/a")
    return [table]
