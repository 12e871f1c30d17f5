"""engine/optim/lr_scheduler.py: learning rates against the closed forms and PyTorch, step by step,
and the state-dict round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import optim
from tests.engine.optim.histories import STEPS, assert_histories_close, problem

SCHEDULERS = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}, lambda base, t: base * 0.5 ** (t // 3)),
    ("ExponentialLR", {"gamma": 0.9}, lambda base, t: base * 0.9**t),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01},
     lambda base, t: 0.01 + (base - 0.01) * (1 + math.cos(math.pi * t / 7)) / 2),
]


def scheduled_lrs(lib, name, hyper, weights, grads):
    params = [lib.nn.Parameter(lib.tensor(w.copy())) for w in weights]
    optimizer = lib.optim.SGD(params, lr=0.1, momentum=0.9)
    scheduler = getattr(lib.optim.lr_scheduler, name)(optimizer, **hyper)
    lrs, history = [scheduler.get_last_lr()[0]], []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = lib.tensor(g.copy())
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        assert optimizer.param_groups[0]["lr"] == lrs[-1]
        history.append([p.detach().numpy().copy() for p in params])
    return lrs, history


@pytest.mark.parametrize("name, hyper, closed_form", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_matches_closed_form(name, hyper, closed_form):
    weights, grads = problem()
    lrs, _ = scheduled_lrs(engine, name, hyper, weights, grads)
    np.testing.assert_allclose(lrs, [closed_form(0.1, t) for t in range(STEPS + 1)], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, hyper, closed_form", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_scheduler_matches_pytorch(name, hyper, closed_form, torch):
    weights, grads = problem()
    ours, our_history = scheduled_lrs(engine, name, hyper, weights, grads)
    theirs, their_history = scheduled_lrs(torch, name, hyper, weights, grads)
    assert ours == theirs  # same recursive formulas, same float operations
    assert_histories_close(our_history, their_history, rtol=1e-10, atol=1e-13)


def test_scheduler_state_dict_round_trip():
    params = [engine.nn.Parameter(engine.ones(2))]
    opt = optim.SGD(params, lr=1.0)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    for _ in range(3):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    assert "optimizer" not in saved and saved["last_epoch"] == 3
    opt2 = optim.SGD([engine.nn.Parameter(engine.ones(2))], lr=1.0)
    sched2 = optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=5)
    sched2.load_state_dict(saved)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    sched.step()
    sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()
