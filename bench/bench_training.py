"""The tutorial's training step: TinyModel (1000 -> 100 -> ReLU -> 10), batch 16.

One step = forward, sum-of-squares loss, backward, SGD step (lr 0.001), zero_grad.
Ours (engine.nn + engine.optim) against PyTorch CPU on one thread and against
the same step written by hand in numpy (forward, the gradients by hand, update).
Ours runs twice: with the engine's BLAS setting (what ``import engine`` gives)
and with numpy's default BLAS pool, one thread per core, as before the engine
limited it.
"""

from __future__ import annotations

import numpy as np

import engine
from bench.timing import (
    Table,
    blas_threads,
    engine_threads,
    fmt_time,
    numpy_default_threads,
    optional_torch,
    per_call_seconds,
    ratio,
)

BATCH, DIM_IN, HIDDEN, DIM_OUT = 16, 1000, 100, 10
LR = 0.001
ROUNDS = 3


def tiny_model(lib):
    class TinyModel(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = lib.nn.Linear(DIM_IN, HIDDEN)
            self.relu = lib.nn.ReLU()
            self.layer2 = lib.nn.Linear(HIDDEN, DIM_OUT)

        def forward(self, x):
            return self.layer2(self.relu(self.layer1(x)))

    return TinyModel()


def library_step(lib, data):
    some_input, ideal_output = (lib.tensor(a) for a in data)
    model = tiny_model(lib)
    optimizer = lib.optim.SGD(model.parameters(), lr=LR)

    def step():
        prediction = model(some_input)
        loss = (ideal_output - prediction).pow(2).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def compiled_step(data, whole_loss=False):
    """The step with ``engine.compile(model)`` (issue 16), or with the model and the loss compiled
    as one function (``whole_loss``): every call after the first replays its plan."""
    some_input, ideal_output = (engine.tensor(a) for a in data)
    model = tiny_model(engine)
    optimizer = engine.optim.SGD(model.parameters(), lr=LR)
    if whole_loss:
        loss_of = engine.compile(lambda x, target: (target - model(x)).pow(2).sum())
    else:
        compiled = engine.compile(model)

        def loss_of(x, target):
            return (target - compiled(x)).pow(2).sum()

    def step():
        loss = loss_of(some_input, ideal_output)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    return step


def numpy_step(data, swapped=False):
    """The step by hand. ``swapped`` writes the forward products as (w @ x.T).T, the orientation
    engine's linear op picks for small batches (faster in OpenBLAS), for a like-for-like figure."""
    x, target = data
    rng = np.random.default_rng(0)
    w1 = rng.uniform(-0.03, 0.03, (HIDDEN, DIM_IN)).astype(np.float32)
    b1 = rng.uniform(-0.03, 0.03, HIDDEN).astype(np.float32)
    w2 = rng.uniform(-0.1, 0.1, (DIM_OUT, HIDDEN)).astype(np.float32)
    b2 = rng.uniform(-0.1, 0.1, DIM_OUT).astype(np.float32)

    def step():
        nonlocal w1, b1, w2, b2
        if swapped:
            hidden = (w1 @ x.T).T + b1
        else:
            hidden = x @ w1.T + b1
        active = np.maximum(hidden, 0)
        prediction = active @ w2.T + b2
        diff = target - prediction
        float((diff * diff).sum())
        g_prediction = -2 * diff
        g_w2 = g_prediction.T @ active
        g_b2 = g_prediction.sum(0)
        g_hidden = (g_prediction @ w2) * (hidden > 0)
        g_w1 = g_hidden.T @ x
        g_b1 = g_hidden.sum(0)
        w1 -= LR * g_w1
        b1 -= LR * g_b1
        w2 -= LR * g_w2
        b2 -= LR * g_b2

    return step


def run() -> list[Table]:
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((BATCH, DIM_IN)).astype(np.float32),
            rng.standard_normal((BATCH, DIM_OUT)).astype(np.float32))
    engine.manual_seed(0)
    torch = optional_torch()
    configured, numpy_default = engine_threads(), numpy_default_threads()
    # name -> (step, BLAS threads it runs with)
    cases = {"engine": (library_step(engine, data), configured),
             "engine, numpy's threads": (library_step(engine, data), numpy_default),
             "numpy": (numpy_step(data), configured), "numpy swapped": (numpy_step(data, swapped=True), configured),
             "compiled model": (compiled_step(data), configured),
             "compiled loss": (compiled_step(data, whole_loss=True), configured)}
    if torch is not None:
        cases["torch"] = (library_step(torch, data), configured)
    # Interleaved rounds, best round kept: on a shared machine the load drifts, and timing
    # the cases one after the other would let the drift decide the ratios.
    best = {}
    for _ in range(ROUNDS):
        for name, (step, threads) in cases.items():
            with blas_threads(threads):
                seconds = per_call_seconds(step, repeat=5)
            best[name] = min(best.get(name, seconds), seconds)
    ours, by_hand, theirs = best["engine"], best["numpy"], best.get("torch")
    ours_default = best["engine, numpy's threads"]
    table = Table(
        f"TinyModel training step (batch 16, 1000->100->10, SGD), per step; BLAS: the engine's {configured} "
        f"thread(s), and numpy's default {numpy_default}",
        ["case", "engine", f"engine, numpy's {numpy_default} BLAS threads", "numpy by hand", "PyTorch (1 thread)",
         "engine / numpy", "engine / PyTorch", "numpy's threads / engine's"],
    )
    table.add("forward + loss + backward + SGD step + zero_grad", fmt_time(ours), fmt_time(ours_default),
              fmt_time(by_hand), fmt_time(theirs), ratio(ours, by_hand), ratio(ours, theirs),
              ratio(ours_default, ours))
    swapped = best["numpy swapped"]
    table.add("same, numpy written with (w @ x.T).T as engine's linear runs it", fmt_time(ours),
              fmt_time(ours_default), fmt_time(swapped), fmt_time(theirs), ratio(ours, swapped), ratio(ours, theirs),
              ratio(ours_default, ours))
    for name, label in (("compiled model", "same, engine.compile(model)"),
                        ("compiled loss", "same, model and loss compiled as one function")):
        t = best[name]
        table.add(f"{label} (target <= 1.15x numpy)", fmt_time(t), "", fmt_time(by_hand), fmt_time(theirs),
                  ratio(t, by_hand), ratio(t, theirs), "")
    return [table]
