"""The optimization algorithms (engine/optim: sgd.py, adam.py, rmsprop.py, adagrad.py), every one
step by step against PyTorch and against the textbook formulas."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import optim
from tests.engine.optim.histories import assert_histories_close, problem
from tests.floats import assert_within_ulps

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.05, "initial_accumulator_value": 0.1}),
]


def _id(config):
    name, hyper = config
    return name + "-" + "-".join(f"{k}={v}" for k, v in hyper.items())


def run_ours(name, hyper, weights, grads):
    params = [engine.nn.Parameter(engine.tensor(w)) for w in weights]
    optimizer = getattr(optim, name)(params, **hyper)
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = engine.tensor(g)
        optimizer.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


def run_torch(torch, name, hyper, weights, grads):
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    optimizer = getattr(torch.optim, name)(params, **hyper)
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.from_numpy(g.copy())
        optimizer.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


# ---- the textbook formulas, in float64 ---------------------------------------------------


def reference_sgd(p, g, s, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * p
    if momentum:
        s["b"] = g.copy() if t == 1 else momentum * s["b"] + (1 - dampening) * g
        g = g + momentum * s["b"] if nesterov else s["b"]
    return p - lr * g


def reference_adam(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False, decoupled=False):
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    b1, b2 = betas
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    v = s["v"]
    if amsgrad:
        s["vmax"] = v = np.maximum(s.get("vmax", 0), v)
    m_hat = s["m"] / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def reference_adamw(p, g, s, t, weight_decay=1e-2, **hyper):
    return reference_adam(p, g, s, t, weight_decay=weight_decay, decoupled=True, **hyper)


def reference_rmsprop(p, g, s, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    g = g + weight_decay * p
    s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
    v = s["v"]
    if centered:
        s["mean"] = alpha * s.get("mean", 0) + (1 - alpha) * g
        v = v - s["mean"] ** 2
    step = g / (np.sqrt(v) + eps)
    if momentum:
        s["b"] = momentum * s.get("b", 0) + step
        step = s["b"]
    return p - lr * step


def reference_adagrad(p, g, s, t, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                      eps=1e-10):
    g = g + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


REFERENCES = {"SGD": reference_sgd, "Adam": reference_adam, "AdamW": reference_adamw, "RMSprop": reference_rmsprop,
              "Adagrad": reference_adagrad}


def run_reference(name, hyper, weights, grads):
    params = [w.copy() for w in weights]
    states = [{} for _ in params]
    history = []
    for t, step_grads in enumerate(grads, 1):
        params = [REFERENCES[name](p, g, s, t, **hyper) for p, g, s in zip(params, step_grads, states)]
        history.append([p.copy() for p in params])
    return history


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_matches_reference_formula(config):
    name, hyper = config
    weights, grads = problem()
    assert_histories_close(run_ours(name, hyper, weights, grads), run_reference(name, hyper, weights, grads),
                           rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_matches_pytorch_float64(config, torch):
    name, hyper = config
    weights, grads = problem()
    assert_histories_close(run_ours(name, hyper, weights, grads), run_torch(torch, name, hyper, weights, grads),
                           rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[6], CONFIGS[12], CONFIGS[16]], ids=_id)
def test_matches_pytorch_float32(config, torch):
    name, hyper = config
    weights, grads = problem(np.float32)
    ours = run_ours(name, hyper, weights, grads)
    assert ours[-1][0].dtype == np.float32
    assert_histories_close(ours, run_torch(torch, name, hyper, weights, grads), rtol=2e-5, atol=2e-6)


def test_plain_sgd_float32_steps_round_like_pytorch(torch):
    """Each float32 step w - lr * g, ours and PyTorch's, from the same weights. Whether the
    multiply-add is fused into one rounding depends on the BLAS kernel (ours) and the CPU
    capability (PyTorch's): fused or not, each is within one ulp of |w| + |lr g| of the exact value."""
    weights, grads = problem(np.float32)
    lr = np.float64(np.float32(0.01))  # both run in float32, lr rounded to it
    for step, step_grads in enumerate(grads, 1):
        ours = run_ours("SGD", {"lr": 0.01}, weights, [step_grads])[0]
        theirs = run_torch(torch, "SGD", {"lr": 0.01}, weights, [step_grads])[0]
        for i, (w, g, mine, other) in enumerate(zip(weights, step_grads, ours, theirs)):
            exact = w.astype(np.float64) - lr * g.astype(np.float64)
            scale = np.abs(w) + np.abs(lr * g)
            assert_within_ulps(mine, exact, 1, scale=scale, err_msg=f"ours, step {step}, parameter {i}")
            assert_within_ulps(other, exact, 1, scale=scale, err_msg=f"PyTorch, step {step}, parameter {i}")
        weights = theirs  # the next step starts from the same weights on both sides


