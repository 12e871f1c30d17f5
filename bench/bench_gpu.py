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
    return [table, _fusion_table(torch)]


# ---- what fusing an elementwise chain buys (engine.backend.fused) -------------------------

FUSION_COLUMNS = ["chain", "fused (one kernel)", "op by op (cupy)", "PyTorch CUDA", "fused / op by op",
                  "fused / PyTorch"]


def _fusion_table(torch) -> Table:
    """tanh's backward on 1e7 elements and an Adam step on a 4096x4096 parameter: our fused kernel,
    the same arithmetic as separate cupy calls, and PyTorch's own kernel (aten.tanh_backward; Adam
    with fused=True)."""
    from engine import backend, ops
    from engine.optim import adam

    cupy = backend.cupy

    table = Table("GPU: fused elementwise kernels vs the same chain op by op (float32)", FUSION_COLUMNS)
    sync = engine.cuda.synchronize
    rng = np.random.default_rng(0)
    g, y = (cupy.asarray(rng.uniform(-1, 1, ELEMENTS).astype(np.float32)) for _ in range(2))

    def timed(fn):
        def call():
            fn()
            sync()

        call()  # compiles the kernel
        return per_call_seconds(call, repeat=5, budget=0.5)

    fused = timed(lambda: ops.tanh_backward(g, y))
    by_op = timed(lambda: g * (1 - y * y))
    theirs = None
    if torch is not None:
        tg, ty = (torch.as_tensor(a, device="cuda") for a in (g, y))
        theirs = timed(lambda: torch.ops.aten.tanh_backward(tg, ty))
    table.add(f"tanh backward, n = {ELEMENTS:.0e}", fmt_time(fused), fmt_time(by_op), fmt_time(theirs),
              ratio(fused, by_op), ratio(fused, theirs))

    shape = (MATMUL, MATMUL)
    p, grad, m, v = (cupy.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(4))
    v = cupy.abs(v)
    args = (1 - 0.9, 0.999, 1 - 0.999, -1e-3 / (1 - 0.9**10), (1 - 0.999**10) ** 0.5, 1e-8)

    def adam_by_op():
        one_minus_beta1, beta2, one_minus_beta2, step_size, bias2, eps = args
        m.__iadd__(one_minus_beta1 * (grad - m))
        v.__imul__(beta2)
        v.__iadd__(one_minus_beta2 * (grad * grad))
        p.__iadd__(step_size * m / (cupy.sqrt(v) / bias2 + eps))

    fused = timed(lambda: adam._adam_step(cupy, p, grad, m, v, v, *args, amsgrad=False))
    by_op = timed(adam_by_op)
    theirs = None
    if torch is not None:
        param = torch.nn.Parameter(torch.as_tensor(p, device="cuda").clone())
        param.grad = torch.as_tensor(grad, device="cuda").clone()
        optimizer = torch.optim.Adam([param], lr=1e-3, fused=True)
        theirs = timed(optimizer.step)
    table.add(f"Adam step, {MATMUL}x{MATMUL} parameter", fmt_time(fused), fmt_time(by_op), fmt_time(theirs),
              ratio(fused, by_op), ratio(fused, theirs))
    return table
