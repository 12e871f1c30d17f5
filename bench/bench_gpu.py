"""GPU workloads (issue 8): ours on cupy against PyTorch CUDA, in the same run.

Cases: ``sum(x * sin(x))`` with its gradient on 1e7 elements; a chain of three
4096x4096 matmuls, forward and backward; the tutorial's TinyModel scaled to
batch 4096 and width 4096 (one SGD training step); the Jacobian of
``tanh(W @ x)`` at n = 2048 (vectorized). All float32. Each timed call ends
with a device synchronize, so figures are wall time of finished GPU work.
The "max abs diff" column compares our result (gradient or Jacobian) with
PyTorch's, as a check that both ran the same computation.

Without a GPU (no cupy, or no device) ``run()`` returns one table saying what
is missing, so ``make bench`` stays green on CPU-only machines.
"""

from __future__ import annotations

import numpy as np

import engine
from bench.timing import Table, fmt_time, per_call_seconds, ratio

ELEMENTS = 10_000_000
MATMUL = 4096
BATCH, WIDTH = 4096, 4096
JACOBIAN_N = 2048
COLUMNS = ["workload", "ours (cupy)", "PyTorch CUDA", "ours / PyTorch", "max abs diff"]


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


# ---- the workloads: each returns (step, result) for a library and device -----------------
# ``lib`` is engine or torch; ``sync`` waits for the device.


def sum_x_sin_x(lib, device, sync):
    x = lib.linspace(-3.0, 3.0, ELEMENTS, device=device).requires_grad_(True)

    def step():
        x.grad = None
        (x * lib.sin(x)).sum().backward()
        sync()

    return step, lambda: x.grad


def matmul_chain(lib, device, sync, seed=0):
    rng = np.random.default_rng(seed)
    a, b, c, d = (lib.tensor(rng.standard_normal((MATMUL, MATMUL), dtype=np.float32) / MATMUL ** 0.5,
                             device=device).requires_grad_(True) for _ in range(4))

    def step():
        for t in (a, b, c, d):
            t.grad = None
        (((a @ b) @ c) @ d).sum().backward()
        sync()

    return step, lambda: a.grad


def tiny_model(lib, device, sync, seed=0):
    lib.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = lib.nn.Sequential(lib.nn.Linear(WIDTH, WIDTH), lib.nn.ReLU(), lib.nn.Linear(WIDTH, 10)).to(device)
    # The same weights for both libraries: drawn here, copied in.
    with lib.no_grad():
        for p in model.parameters():
            p.copy_(lib.tensor(rng.uniform(-0.01, 0.01, tuple(p.shape)).astype(np.float32), device=device))
    x = lib.tensor(rng.standard_normal((BATCH, WIDTH), dtype=np.float32), device=device)
    y = lib.tensor(rng.standard_normal((BATCH, 10), dtype=np.float32), device=device)
    loss_fn = lib.nn.MSELoss(reduction="sum")
    optimizer = lib.optim.SGD(model.parameters(), lr=1e-6)

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        sync()

    return step, lambda: model[0].weight.grad


def tanh_jacobian(lib, device, sync, functional, seed=0):
    rng = np.random.default_rng(seed)
    w = lib.tensor(rng.standard_normal((JACOBIAN_N, JACOBIAN_N), dtype=np.float32) / JACOBIAN_N ** 0.5,
                   device=device)
    x = lib.tensor(rng.standard_normal(JACOBIAN_N, dtype=np.float32), device=device)
    box = {}

    def step():
        box["jacobian"] = functional.jacobian(lambda v: lib.tanh(w @ v), x, vectorize=True)
        sync()

    return step, lambda: box["jacobian"]


WORKLOADS = [
    (f"sum(x * sin(x)) + grad, n = {ELEMENTS:.0e}", sum_x_sin_x),
    (f"matmul chain {MATMUL}x{MATMUL} x3, fwd + bwd", matmul_chain),
    (f"TinyModel batch {BATCH} width {WIDTH}, one SGD step", tiny_model),
    (f"Jacobian of tanh(W @ x), n = {JACOBIAN_N}", tanh_jacobian),
]


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _prepare(make, lib, sync, functional):
    args = (lib, "cuda", sync) + ((functional,) if make is tanh_jacobian else ())
    return make(*args)


def run() -> list[Table]:
    table = Table("GPU: ours on cupy vs PyTorch CUDA (float32; target within 1.3x)", COLUMNS)
    if not engine.cuda.is_available():
        table.add("(all)", "no GPU", "n/a", "n/a", f"skipped: {engine.cuda.unavailable_reason()}")
        return [table]
    torch = _torch_cuda()
    from engine.autograd import functional as ours_functional

    for name, make in WORKLOADS:
        step, result = _prepare(make, engine, engine.cuda.synchronize, ours_functional)
        ours = per_call_seconds(step, repeat=5, budget=1.0)
        ours_result = _host(result())
        del step, result
        theirs, diff = None, "n/a"
        if torch is not None:
            t_step, t_result = _prepare(make, torch, torch.cuda.synchronize, torch.autograd.functional)
            theirs = per_call_seconds(t_step, repeat=5, budget=1.0)
            diff = f"{float(np.max(np.abs(ours_result - _host(t_result())))):.2e}"
            del t_step, t_result
            torch.cuda.empty_cache()
        table.add(name, fmt_time(ours), fmt_time(theirs), ratio(ours, theirs), diff)
    if torch is None:
        table.add("(PyTorch)", "", "n/a", "n/a", "PyTorch with CUDA is not installed here")
    return [table]
