"""Optimizers and schedulers: step by step against PyTorch and against the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import optim
from tests.floats import assert_within_ulps

STEPS = 20
SHAPES = [(3, 4), (5,)]

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


def problem(dtype=np.float64):
    """Initial weights and a fixed sequence of gradients (one list per step)."""
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return weights, grads


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


def assert_histories_close(ours, theirs, rtol, atol):
    for step, (mine, other) in enumerate(zip(ours, theirs), 1):
        for i, (a, b) in enumerate(zip(mine, other)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {step}, parameter {i}")


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


# ---- schedulers ---------------------------------------------------------------------------

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


# ---- the Optimizer base ---------------------------------------------------------------------


def make_param(values=(1.0, 2.0, 3.0)):
    return engine.nn.Parameter(engine.tensor(list(values)))


def test_zero_grad_default_drops_grads_and_false_zeroes_in_place():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)
    (p * p).sum().backward()
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None


def test_parameters_without_grad_are_skipped():
    p, q = make_param(), make_param()
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = engine.ones(3)
    opt.step()
    np.testing.assert_array_equal(q.detach().numpy(), [1.0, 2.0, 3.0])
    assert q not in opt.state and p in opt.state
    assert not np.array_equal(p.detach().numpy(), [1.0, 2.0, 3.0])


def test_step_bumps_the_version_so_a_stale_graph_refuses_backward():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)
    loss = (p * p).sum()  # MulBackward0 saved p
    p.grad = engine.ones(3)
    version = p._version
    opt.step()
    assert p._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_param_groups_have_their_own_hyperparameters():
    p, q = make_param(), make_param()
    opt = optim.SGD([{"params": [p]}, {"params": [q], "lr": 1.0}], lr=0.1)
    p.grad, q.grad = engine.ones(3), engine.ones(3)
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [0.9, 1.9, 2.9], rtol=1e-6)
    np.testing.assert_allclose(q.detach().numpy(), [0.0, 1.0, 2.0], atol=1e-6)
    assert opt.param_groups[1]["momentum"] == 0.0  # defaults fill the group


def test_state_dict_round_trip_continues_identically():
    weights, grads = problem()
    first = [engine.nn.Parameter(engine.tensor(w)) for w in weights]
    opt = optim.Adam(first, lr=0.01, amsgrad=True)
    for step_grads in grads[:5]:
        for p, g in zip(first, step_grads):
            p.grad = engine.tensor(g)
        opt.step()
    saved = opt.state_dict()
    assert sorted(saved["state"]) == [0, 1] and saved["param_groups"][0]["params"] == [0, 1]
    second = [engine.nn.Parameter(engine.tensor(p.detach().numpy())) for p in first]
    opt2 = optim.Adam(second, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.01
    for step_grads in grads[5:10]:
        for params, optimizer in ((first, opt), (second, opt2)):
            for p, g in zip(params, step_grads):
                p.grad = engine.tensor(g)
            optimizer.step()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_closure_is_evaluated_with_grad_enabled():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with engine.no_grad():
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(14.0)
    np.testing.assert_allclose(p.detach().numpy(), [0.8, 1.6, 2.4], rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda p: optim.SGD([p], lr=-1.0), "Invalid learning rate"),
        (lambda p: optim.SGD([p], lr=0.1, nesterov=True), "Nesterov"),
        (lambda p: optim.Adam([p], betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
        (lambda p: optim.SGD([p, p], lr=0.1), "duplicate parameters"),
        (lambda p: optim.SGD([p * 2], lr=0.1), "non-leaf"),
    ],
)
def test_invalid_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_param())


def test_repr_lists_groups():
    opt = optim.SGD([make_param()], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0") and "momentum: 0.9" in text and "lr: 0.1" in text
