"""engine.nn: Module bookkeeping, layers, init, and losses (values and gradients).

Expected values come from numpy formulas in float64 (always) and from
torch.nn.functional (where PyTorch is installed); second derivatives from
float64 finite differences (gradgradcheck).
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

import engine
from engine import nn
from engine.autograd import gradcheck, gradgradcheck
from engine.nn import functional as F

# ---- Parameter and Module -------------------------------------------------------------


@pytest.mark.host_only
def test_parameter_is_a_leaf_tensor_that_requires_grad_and_shares_memory():
    data = engine.tensor([1.0, 2.0])
    p = nn.Parameter(data)
    assert isinstance(p, engine.Tensor) and p.requires_grad and p.is_leaf
    data.add_(1.0)
    np.testing.assert_array_equal(p.detach().numpy(), [2.0, 3.0])
    assert repr(p) == "Parameter containing:\ntensor([2., 3.], requires_grad=True)"
    assert not nn.Parameter(engine.ones(2), requires_grad=False).requires_grad
    assert type(p * 2) is engine.Tensor


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 4)
        self.scale = nn.Parameter(engine.ones(4))
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.inner(x)) * self.scale


def test_registration_order_names_and_traversal():
    model = nn.Sequential(Block(), nn.ReLU(), nn.Linear(4, 2))
    names = [n for n, _ in model.named_parameters()]
    # PyTorch's order: a module's own parameters, then its children's.
    assert names == ["0.scale", "0.inner.weight", "0.inner.bias", "2.weight", "2.bias"]
    assert len(list(model.parameters())) == 5
    assert [type(m).__name__ for m in model.children()] == ["Block", "ReLU", "Linear"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "0.inner", "0.act", "1", "2"]
    assert isinstance(model[2], nn.Linear) and len(model) == 3
    assert model(engine.randn(5, 3)).shape == (5, 2)


def test_assigning_none_and_deleting_unregister():
    layer = nn.Linear(2, 2)
    layer.bias = None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert layer(engine.ones(1, 2)).shape == (1, 2)
    with pytest.raises(TypeError, match="Parameter or None expected"):
        layer.weight = engine.ones(2, 2)
    del layer.weight
    assert list(layer.parameters()) == []


def test_shared_parameters_are_listed_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, shared)
    assert len(list(model.parameters())) == 2


def test_train_eval_reach_every_submodule():
    model = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1)))
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_and_load_state_dict():
    engine.manual_seed(1)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert not state["0.weight"].requires_grad
    result = b.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        assert q.requires_grad
    partial = {k: v for k, v in state.items() if k != "2.bias"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "2\.bias"'):
        b.load_state_dict(partial)
    assert b.load_state_dict(partial, strict=False).missing_keys == ["2.bias"]
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight"):
        b.load_state_dict({**state, "0.weight": engine.zeros(2, 2)})


def test_module_zero_grad_and_double():
    model = nn.Linear(3, 2)
    model(engine.ones(1, 3)).sum().backward()
    model.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(model.weight.grad.numpy(), np.zeros((2, 3), np.float32))
    model.zero_grad()
    assert model.weight.grad is None
    model.double()
    assert model.weight.dtype == engine.float64 and isinstance(model.weight, nn.Parameter)
    assert model(engine.ones(1, 3, dtype=engine.float64)).dtype == engine.float64


def test_repr_matches_pytorch_layout():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.GELU(), nn.Dropout(0.2), nn.Softmax(dim=-1))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=False)\n"
        "  (1): GELU(approximate='none')\n"
        "  (2): Dropout(p=0.2, inplace=False)\n"
        "  (3): Softmax(dim=-1)\n"
        ")"
    )


def test_repr_equals_pytorch(torch):
    ours = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Flatten(), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.Sigmoid(),
                                 torch.nn.Flatten(), torch.nn.Identity())
    assert repr(ours) == repr(theirs)


# ---- Linear and init ---------------------------------------------------------------------


def test_linear_default_init_bounds_and_spread():
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w = layer.weight.detach().numpy()
    b = layer.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # U(-b, b) has std b / sqrt(3)
    assert abs(np.mean(w)) < 0.01 * bound
    assert w.dtype == np.float32


def test_linear_init_is_seeded():
    engine.manual_seed(5)
    first = nn.Linear(10, 3).weight.detach().numpy().copy()
    engine.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(10, 3).weight.detach().numpy(), first)
    with nn.init.use_generator(engine.Generator().manual_seed(5)):
        np.testing.assert_array_equal(nn.Linear(10, 3).weight.detach().numpy(), first)


def test_linear_forward_and_grads_by_formula():
    layer = nn.Linear(5, 3, dtype=engine.float64)
    x = engine.randn(4, 5, dtype=engine.float64, requires_grad=True)
    out = layer(x)
    assert out.grad_fn.name() == "AddmmBackward0"
    w, b, xv = layer.weight.detach().numpy(), layer.bias.detach().numpy(), x.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), xv @ w.T + b, rtol=1e-12)
    g = np.arange(12.0).reshape(4, 3)
    out.backward(engine.tensor(g))
    np.testing.assert_allclose(layer.weight.grad.numpy(), g.T @ xv, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g @ w, rtol=1e-12)


def test_init_functions():
    t = engine.empty(200, 300)
    nn.init.xavier_uniform_(t)
    bound = math.sqrt(6 / 500)
    assert np.abs(t.numpy()).max() <= bound
    nn.init.xavier_normal_(t, gain=2.0)
    assert np.std(t.numpy()) == pytest.approx(2.0 * math.sqrt(2 / 500), rel=0.03)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert np.std(t.numpy()) == pytest.approx(math.sqrt(2 / 300), rel=0.03)
    nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu")
    assert np.abs(t.numpy()).max() <= math.sqrt(6 / 200)
    nn.init.normal_(t, 3.0, 0.5)
    assert np.mean(t.numpy()) == pytest.approx(3.0, abs=0.01)
    nn.init.constant_(t, 0.25)
    assert (t.numpy() == 0.25).all()
    nn.init.zeros_(t)
    assert (t.numpy() == 0).all()
    nn.init.ones_(t)
    assert (t.numpy() == 1).all()
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(engine.empty(3))


def test_init_on_a_parameter_keeps_it_a_leaf():
    p = nn.Parameter(engine.empty(3, 3))
    nn.init.uniform_(p, -1, 1)
    assert p.is_leaf and p.grad_fn is None and p.requires_grad


# ---- activations, softmax, dropout --------------------------------------------------------

ACTIVATIONS = [
    ("relu", nn.ReLU(), lambda x: np.maximum(x, 0)),
    ("tanh", nn.Tanh(), np.tanh),
    ("sigmoid", nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    ("gelu", nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("gelu_tanh", nn.GELU("tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ("softmax", nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    ("log_softmax", nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    ("softplus", nn.Softplus(), lambda x: np.log1p(np.exp(x))),
    ("identity", nn.Identity(), lambda x: x),
]


def _input64():
    rng = np.random.default_rng(3)
    return rng.standard_normal((4, 5)) * 2


@pytest.mark.parametrize("name, module, formula", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_values_and_gradients(name, module, formula):
    x = _input64()
    out = module(engine.tensor(x))
    np.testing.assert_allclose(out.numpy(), formula(x), rtol=1e-10, atol=1e-12)
    t = engine.tensor(x, requires_grad=True)
    assert gradcheck(lambda v: module(v), (t,))


@pytest.mark.parametrize("name, module, formula", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_matches_pytorch(name, module, formula, torch):
    x = _input64()
    theirs_fn = {
        "relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(), "gelu": torch.nn.GELU(),
        "gelu_tanh": torch.nn.GELU("tanh"), "softmax": torch.nn.Softmax(dim=1),
        "log_softmax": torch.nn.LogSoftmax(dim=1), "softplus": torch.nn.Softplus(), "identity": torch.nn.Identity(),
    }[name]
    mine = engine.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    weights = np.linspace(-1, 1, 20).reshape(4, 5)
    (module(mine) * engine.tensor(weights)).sum().backward()
    (theirs_fn(theirs) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(module(mine).detach().numpy(), theirs_fn(theirs).detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_flatten():
    x = engine.randn(2, 3, 4)
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    assert F.flatten(x).shape == (24,)


def test_dropout_masks_scales_and_routes_gradients():
    layer = nn.Dropout(p=0.25)
    x = engine.ones(200, 100, requires_grad=True)
    out = layer(x)
    values = out.detach().numpy()
    kept = values != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(values[kept], 1 / 0.75, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), values, rtol=1e-6)  # d out / d x is the scaled mask
    layer.eval()
    assert layer(x) is x
    assert (nn.Dropout(1.0)(engine.ones(3)).numpy() == 0).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_draws_from_the_generator_in_scope():
    x = engine.ones(50)
    with nn.init.use_generator(engine.Generator().manual_seed(3)):
        first = F.dropout(x, 0.5).numpy()
    with nn.init.use_generator(engine.Generator().manual_seed(3)):
        second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)


# ---- losses ----------------------------------------------------------------------------------


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


def test_deepcopy_and_pickle_keep_parameters_registered():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        weight = clone[0].weight
        assert isinstance(weight, nn.Parameter) and weight is not model[0].weight
        assert weight is dict(clone.named_parameters())["0.weight"]
        np.testing.assert_array_equal(weight.detach().numpy(), model[0].weight.detach().numpy())
