"""engine/nn/losses.py and the loss functions of engine/nn/functional.py: values and gradients.

Expected values come from numpy formulas in float64 (always) and from
torch.nn.functional (where PyTorch is installed); gradients and second
derivatives from float64 finite differences (gradcheck, gradgradcheck).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import nn
from engine.autograd import gradcheck, gradgradcheck
from engine.nn import functional as F


def _pair(shape=(4, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape)


def _probabilities(shape=(4, 3), seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)


def _reduce(values, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](values)


def _huber(d, delta=1.0):
    return np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))


def _log_softmax(x, axis=1):
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


LOSS_CASES = [
    # name, engine module, numpy formula of (x, t), data maker, torch module factory
    ("mse", lambda r: nn.MSELoss(reduction=r), lambda x, t: (x - t) ** 2, _pair,
     lambda th, r: th.nn.MSELoss(reduction=r)),
    ("l1", lambda r: nn.L1Loss(reduction=r), lambda x, t: np.abs(x - t), _pair,
     lambda th, r: th.nn.L1Loss(reduction=r)),
    ("huber", lambda r: nn.HuberLoss(reduction=r, delta=0.7), lambda x, t: _huber(x - t, 0.7), _pair,
     lambda th, r: th.nn.HuberLoss(reduction=r, delta=0.7)),
    ("smooth_l1", lambda r: nn.SmoothL1Loss(reduction=r, beta=0.5), lambda x, t: _huber(x - t, 0.5) / 0.5, _pair,
     lambda th, r: th.nn.SmoothL1Loss(reduction=r, beta=0.5)),
    ("bce", lambda r: nn.BCELoss(reduction=r), lambda x, t: -(t * np.log(x) + (1 - t) * np.log(1 - x)),
     _probabilities, lambda th, r: th.nn.BCELoss(reduction=r)),
    ("bce_with_logits", lambda r: nn.BCEWithLogitsLoss(reduction=r),
     lambda x, t: -(t * np.log(1 / (1 + np.exp(-x))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-x)))),
     lambda: (_pair()[0] * 3, _probabilities()[1]), lambda th, r: th.nn.BCEWithLogitsLoss(reduction=r)),
    ("cross_entropy_probs", lambda r: nn.CrossEntropyLoss(reduction=r),
     lambda x, t: -(t * _log_softmax(x)).sum(1), lambda: (_pair()[0], np.exp(_log_softmax(_pair(seed=2)[1]))),
     lambda th, r: th.nn.CrossEntropyLoss(reduction=r)),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_loss_values_by_formula_and_gradcheck(case, reduction):
    _, make, formula, data, _ = case
    x, t = data()
    loss_fn = make(reduction)
    value = loss_fn(engine.tensor(x), engine.tensor(t))
    np.testing.assert_allclose(value.numpy(), _reduce(formula(x, t), reduction), rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda v: loss_fn(v, engine.tensor(t)), (engine.tensor(x, requires_grad=True),))


# L1 is left out: piecewise linear, its second derivative is zero almost everywhere.
SMOOTH_LOSSES = [c for c in LOSS_CASES if c[0] != "l1"]


@pytest.mark.parametrize("case", SMOOTH_LOSSES, ids=[c[0] for c in SMOOTH_LOSSES])
def test_loss_second_derivatives(case):
    _, make, _, data, _ = case
    x, t = data()
    loss_fn = make("sum")
    assert gradgradcheck(lambda v: loss_fn(v, engine.tensor(t)), (engine.tensor(x, requires_grad=True),))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_loss_matches_pytorch(case, reduction, torch):
    _, make, _, data, make_theirs = case
    x, t = data()
    mine = engine.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    ours_value = make(reduction)(mine, engine.tensor(t))
    their_value = make_theirs(torch, reduction)(theirs, torch.tensor(t))
    np.testing.assert_allclose(ours_value.detach().numpy(), their_value.detach().numpy(), rtol=1e-10, atol=1e-12)
    ours_value.sum().backward()
    their_value.sum().backward()
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


CROSS_ENTROPY_INDEX_CASES = [
    {},
    {"weight": [0.2, 1.0, 3.0]},
    {"ignore_index": 1},
    {"label_smoothing": 0.2},
    {"label_smoothing": 0.1, "weight": [0.2, 1.0, 3.0], "ignore_index": 2},
]


def _cross_entropy_reference(x, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    logp = _log_softmax(x)
    classes = x.shape[1]
    w = np.ones(classes) if weight is None else np.asarray(weight)
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    nll = -logp[np.arange(len(target)), safe] * w[safe] * keep
    smooth = -(logp * w).sum(1) * keep
    if reduction == "mean":
        denominator = (w[safe] * keep).sum()
        nll, smooth = nll.sum() / denominator, smooth.sum() / denominator
    else:
        nll, smooth = _reduce(nll, reduction), _reduce(smooth, reduction)
    return (1 - label_smoothing) * nll + label_smoothing / classes * smooth


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", CROSS_ENTROPY_INDEX_CASES, ids=str)
def test_cross_entropy_with_class_indices(options, reduction):
    x = _pair((6, 3))[0]
    target = np.array([0, 2, 1, 1, 2, 0])
    kwargs = {k: engine.tensor(v, dtype=engine.float64) if k == "weight" else v for k, v in options.items()}
    loss_fn = nn.CrossEntropyLoss(reduction=reduction, **kwargs)
    value = loss_fn(engine.tensor(x), engine.tensor(target))
    np.testing.assert_allclose(value.numpy(), _cross_entropy_reference(x, target, reduction=reduction, **options),
                               rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda v: loss_fn(v, engine.tensor(target)), (engine.tensor(x, requires_grad=True),))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", CROSS_ENTROPY_INDEX_CASES, ids=str)
def test_cross_entropy_with_class_indices_matches_pytorch(options, reduction, torch):
    x = _pair((6, 3))[0]
    target = np.array([0, 2, 1, 1, 2, 0])
    mine = engine.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    ours_value = nn.CrossEntropyLoss(
        reduction=reduction, **{k: engine.tensor(v, dtype=engine.float64) if k == "weight" else v
                                for k, v in options.items()})(mine, engine.tensor(target))
    their_value = torch.nn.CrossEntropyLoss(
        reduction=reduction, **{k: torch.tensor(v, dtype=torch.float64) if k == "weight" else v
                                for k, v in options.items()})(theirs, torch.tensor(target))
    np.testing.assert_allclose(ours_value.detach().numpy(), their_value.detach().numpy(), rtol=1e-10, atol=1e-12)
    ours_value.sum().backward()
    their_value.sum().backward()
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_cross_entropy_unbatched_and_spatial(torch):
    x = _pair((2, 3, 4))[0]
    target = np.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    ours = F.cross_entropy(engine.tensor(x), engine.tensor(target)).item()
    assert ours == pytest.approx(torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target)).item())
    single = F.cross_entropy(engine.tensor(x[0, :, 0]), engine.tensor(1)).item()
    assert single == pytest.approx(-_log_softmax(x[0, :, 0], axis=0)[1])


def test_cross_entropy_second_derivative():
    target = engine.tensor([0, 2, 1])
    x = engine.tensor(_pair((3, 3))[0], requires_grad=True)
    assert gradgradcheck(lambda v: F.cross_entropy(v, target, label_smoothing=0.1), (x,))


def test_bce_weights_and_pos_weight(torch):
    x, t = _probabilities()
    w = np.array([0.5, 1.0, 2.0])
    ours = F.binary_cross_entropy(engine.tensor(x), engine.tensor(t), weight=engine.tensor(w)).item()
    theirs = torch.nn.functional.binary_cross_entropy(torch.tensor(x), torch.tensor(t), weight=torch.tensor(w))
    assert ours == pytest.approx(theirs.item(), rel=1e-10)
    logits = _pair()[0] * 4
    ours = F.binary_cross_entropy_with_logits(engine.tensor(logits), engine.tensor(t), pos_weight=engine.tensor(w))
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(t),
                                                                  pos_weight=torch.tensor(w))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)


def test_bce_with_logits_is_stable_for_large_logits():
    x = engine.tensor([100.0, -100.0, 40.0], requires_grad=True)
    t = engine.tensor([0.0, 1.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
    assert loss.item() == pytest.approx(200.0 + math.log1p(math.exp(-40.0)), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, -1.0, -math.exp(-40.0)], atol=1e-7)


def test_loss_argument_errors():
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="different to the input size"):
        F.binary_cross_entropy(engine.rand(3), engine.rand(2, 3))
    with pytest.raises(ValueError, match="Expected target of shape"):
        F.cross_entropy(engine.randn(4, 3), engine.tensor([0, 1]))
    with pytest.raises(IndexError):
        F.cross_entropy(engine.randn(2, 3), engine.tensor([0, 3]))


