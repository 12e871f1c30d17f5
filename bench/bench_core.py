"""Engine core: per-op overhead and large-array throughput, forward + backward.

Cases (issue 2): the tutorial's sin example on 25 elements; a 100-op
elementwise chain on 25 elements (reported per op); sum(x * sin(x)) with its
gradient on 1e6 elements. Each against hand-written numpy (forward plus the
gradient written by hand) and PyTorch CPU on one thread; ours with the engine's
BLAS setting and, beside it, with numpy's default BLAS pool.

A second table (issue 16) runs the same cases through ``engine.compile``
(steady state: every call replays), and the first call of a fresh compiled
function (trace + plan) against one eager call.
"""

from __future__ import annotations

import math

import numpy as np

import engine
from bench.timing import (
    Table,
    engine_threads,
    fmt_time,
    numpy_default_threads,
    optional_torch,
    per_call_seconds,
    per_call_seconds_by_threads,
    ratio,
)

CHAIN_LENGTH = 100
COMPILED_ROUNDS = 5


# ---- the tutorial's sin example -------------------------------------------------


def sin_example(lib):
    a = lib.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)

    def step():
        a.grad = None
        out = (2 * lib.sin(a) + 1).sum()
        out.backward()

    return step


def sin_example_numpy():
    a = np.linspace(0.0, 2.0 * math.pi, 25).astype(np.float32)

    def step():
        b = np.sin(a)
        d = 2 * b + 1
        d.sum()
        return 2 * np.ones_like(a) * np.cos(a)

    return step


# ---- a 100-op elementwise chain ---------------------------------------------------
# Four kinds of op in turn: x * 1.01, sin(x), x + 0.1, tanh(x).


def chain(lib):
    x = lib.linspace(0.1, 1.0, steps=25, requires_grad=True)

    def step():
        x.grad = None
        chain_function(x).backward()

    return step


def chain_numpy():
    x = np.linspace(0.1, 1.0, 25).astype(np.float32)

    def step():
        saved = []
        y = x
        for i in range(CHAIN_LENGTH):
            kind = i % 4
            saved.append(y)
            if kind == 0:
                y = y * np.float32(1.01)
            elif kind == 1:
                y = np.sin(y)
            elif kind == 2:
                y = y + np.float32(0.1)
            else:
                y = np.tanh(y)
            if kind == 3:
                saved[-1] = y  # tanh's derivative uses its output
        y.sum()
        g = np.ones_like(y)
        for i in reversed(range(CHAIN_LENGTH)):
            kind = i % 4
            if kind == 0:
                g = g * np.float32(1.01)
            elif kind == 1:
                g = g * np.cos(saved[i])
            elif kind == 3:
                g = g * (1 - saved[i] * saved[i])
        return g

    return step


# ---- sum(x * sin(x)) on 1e6 elements ---------------------------------------------


def big(lib, data):
    x = lib.tensor(data, requires_grad=True)

    def step():
        x.grad = None
        (x * lib.sin(x)).sum().backward()

    return step


def big_numpy(data):
    def step():
        s = np.sin(data)
        (data * s).sum()
        return s + data * np.cos(data)

    return step


# ---- compiled (engine.compile) ----------------------------------------------------


def sin_function(a):
    return (2 * engine.sin(a) + 1).sum()


def chain_function(x):
    y = x
    for i in range(CHAIN_LENGTH):
        kind = i % 4
        if kind == 0:
            y = y * 1.01
        elif kind == 1:
            y = y.sin()
        elif kind == 2:
            y = y + 0.1
        else:
            y = y.tanh()
    return y.sum()


def big_function(x):
    return (x * engine.sin(x)).sum()


def compiled_step(function, x):
    compiled = engine.compile(function)

    def step():
        x.grad = None
        compiled(x).backward()

    step()
    return step


def first_call_step(function, x):
    def step():
        x.grad = None
        engine.compile(function)(x).backward()

    return step


def eager_step(function, x):
    def step():
        x.grad = None
        function(x).backward()

    return step


def compiled_table(torch, data) -> Table:
    sin_input = engine.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)
    chain_input = engine.linspace(0.1, 1.0, steps=25, requires_grad=True)
    big_input = engine.tensor(data, requires_grad=True)
    cases = [
        ("sin example fwd+bwd (25 el.)", compiled_step(sin_function, sin_input), eager_step(sin_function, sin_input),
         sin_example_numpy(), sin_example(torch) if torch else None, 1, "<= 0.25x PyTorch, <= 2x numpy"),
        (f"{CHAIN_LENGTH}-op chain fwd+bwd, per op (25 el.)", compiled_step(chain_function, chain_input),
         eager_step(chain_function, chain_input), chain_numpy(), chain(torch) if torch else None, CHAIN_LENGTH,
         "<= 1.5 us/op"),
        ("sum(x*sin(x)) fwd+bwd (1e6 el.)", compiled_step(big_function, big_input),
         eager_step(big_function, big_input), big_numpy(data), big(torch, data) if torch else None, 1,
         "<= 1.3x numpy"),
        ("first call (trace + plan) of the sin example", first_call_step(sin_function, sin_input),
         eager_step(sin_function, sin_input), None, None, 1, "<= 3x eager"),
    ]
    table = Table(
        "Engine core, compiled (engine.compile; steady state replays; CPU, the engine's BLAS threads; "
        f"best of {COMPILED_ROUNDS} interleaved rounds)",
        ["case", "compiled", "eager", "numpy (by hand)", "PyTorch (1 thread)", "compiled / eager",
         "vs numpy", "vs PyTorch", "target"],
    )
    # Interleaved rounds, best kept: on a shared machine the load drifts between cases.
    best = {}
    for _ in range(COMPILED_ROUNDS):
        for name, *steps, per, _target in cases:
            for column, step in enumerate(steps):
                if step is not None:
                    seconds = per_call_seconds(step, repeat=3) / per
                    best[name, column] = min(best.get((name, column), seconds), seconds)
    for name, *_steps, _per, target in cases:
        t_compiled, t_eager, t_numpy, t_torch = (best.get((name, column)) for column in range(4))
        table.add(name, fmt_time(t_compiled), fmt_time(t_eager), fmt_time(t_numpy), fmt_time(t_torch),
                  ratio(t_compiled, t_eager), ratio(t_compiled, t_numpy), ratio(t_compiled, t_torch), target)
    return table


def _check_same_gradient(torch):
    """The figures only mean something if the three compute the same thing."""
    x = engine.linspace(0.1, 1.0, steps=25, requires_grad=True)
    chain(engine)  # builds and discards a closure; the check runs the steps below
    y = x
    for i in range(CHAIN_LENGTH):
        y = [lambda t: t * 1.01, lambda t: t.sin(), lambda t: t + 0.1, lambda t: t.tanh()][i % 4](y)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), chain_numpy()(), rtol=1e-4)


def run() -> list[Table]:
    torch = optional_torch()
    _check_same_gradient(torch)
    data = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    cases = [
        ("sin example fwd+bwd (25 el.)", sin_example(engine), sin_example_numpy(),
         sin_example(torch) if torch else None, 1),
        (f"{CHAIN_LENGTH}-op chain fwd+bwd, per op (25 el.)", chain(engine), chain_numpy(),
         chain(torch) if torch else None, CHAIN_LENGTH),
        ("sum(x*sin(x)) fwd+bwd (1e6 el.)", big(engine, data), big_numpy(data),
         big(torch, data) if torch else None, 1),
    ]
    configured, numpy_default = engine_threads(), numpy_default_threads()
    table = Table(
        f"Engine core (CPU; BLAS: the engine's {configured} thread(s), and numpy's default {numpy_default})",
        ["case", "gradserve", f"gradserve, numpy's {numpy_default} BLAS threads", "numpy (by hand)",
         "PyTorch (1 thread)", "vs numpy", "vs PyTorch", "numpy's threads / engine's"],
    )
    for name, ours, by_hand, theirs, per in cases:
        t_ours, t_ours_default = (t / per for t in per_call_seconds_by_threads(ours, [configured, numpy_default]))
        t_numpy = per_call_seconds(by_hand) / per
        t_torch = per_call_seconds(theirs) / per if theirs else None
        table.add(name, fmt_time(t_ours), fmt_time(t_ours_default), fmt_time(t_numpy), fmt_time(t_torch),
                  ratio(t_ours, t_numpy), ratio(t_ours, t_torch), ratio(t_ours_default, t_ours))
    return [table, compiled_table(torch, data)]
