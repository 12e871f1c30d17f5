"""Model specs: validation messages, building, training, and the state round trip."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import engine
from engine import nn
from frontends.model_spec import ModelSpec, SpecError, TrainableModel, build
from tests.floats import assert_within_ulps

TUTORIAL = {
    "layers": [{"type": "linear", "in_features": 20, "out_features": 8}, {"type": "relu"},
               {"type": "linear", "in_features": 8, "out_features": 3}],
    "loss": {"type": "mse", "reduction": "sum"},
    "optimizer": {"type": "sgd", "lr": 0.001},
    "seed": 0,
}


def spec_with(**changes):
    spec = copy.deepcopy(TUTORIAL)
    spec.update(changes)
    return spec


def data(rows=12, features=20, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, features)).astype(np.float32), rng.standard_normal((rows, outputs))


# ---- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, path, message",
    [
        (spec_with(layers=[{"type": "linear", "in_features": 20, "out_features": 100}, {"type": "relu"},
                           {"type": "linear", "in_features": 50, "out_features": 10}]),
         "layers[2] (linear)", "in_features 50 does not match the previous layer's 100 outputs"),
        (spec_with(layers=[{"type": "conv"}]), "layers[0]", "unknown layer type 'conv'"),
        (spec_with(layers=[{"type": "linear", "in_features": 3}]), "layers[0] (linear)",
         "missing required field 'out_features'"),
        (spec_with(layers=[{"type": "linear", "in_features": 0, "out_features": 2}]), "layers[0] (linear)",
         "in_features must be at least 1"),
        (spec_with(layers=[{"type": "relu", "inplace": True}]), "layers[0] (relu)", "unknown field 'inplace'"),
        (spec_with(layers=[{"type": "dropout", "p": 1.5}]), "layers[0] (dropout)", "p must be at most 1.0"),
        (spec_with(layers=[{"type": "linear", "in_features": "3", "out_features": 2}]), "layers[0] (linear)",
         "in_features must be an integer"),
        (spec_with(layers=[]), "layers", "non-empty list"),
        (spec_with(loss={"type": "mse", "reduction": "avg"}), "loss (mse)", "reduction must be one of"),
        (spec_with(loss={"type": "hinge"}), "loss", "unknown loss type 'hinge'"),
        (spec_with(optimizer={"type": "sgd", "lr": -1}), "optimizer (sgd)", "lr must be at least 0.0"),
        (spec_with(optimizer={"type": "sgd", "lr": 0.1, "nesterov": True}), "optimizer (sgd)", "Nesterov"),
        (spec_with(optimizer={"type": "adam", "betas": [0.9, 1.0]}), "optimizer (adam)", "betas[1] must be below"),
        (spec_with(optimizer={"type": "adam", "momentum": 0.9}), "optimizer (adam)", "unknown field 'momentum'"),
        (spec_with(scheduler={"type": "step"}), "scheduler (step)", "missing required field 'step_size'"),
        (spec_with(dtype="int8"), "dtype", "dtype must be one of"),
        (spec_with(seed=-1), "seed", "seed must be at least 0"),
        (spec_with(extra=1), "extra", "unknown field"),
    ],
)
def test_validation_errors_name_the_offending_part(spec, path, message):
    with pytest.raises(SpecError) as caught:
        ModelSpec.parse(spec)
    assert caught.value.path == path
    assert message in str(caught.value)
    assert str(caught.value).startswith(path)


def test_defaults_are_filled_and_round_trip():
    parsed = ModelSpec.parse({"layers": [{"type": "linear", "in_features": 4, "out_features": 2}], "seed": 3})
    spec = parsed.as_dict()
    assert spec["layers"][0]["bias"] is True
    assert spec["loss"] == {"type": "mse", "reduction": "mean"}
    assert spec["optimizer"]["type"] == "sgd" and spec["optimizer"]["momentum"] == 0.0
    assert spec["dtype"] == "float32" and spec["seed"] == 3 and "scheduler" not in spec
    assert ModelSpec.parse(json.loads(json.dumps(spec))).as_dict() == spec
    assert parsed.parameter_count() == 10 and parsed.in_features == 4
    assert isinstance(ModelSpec.parse({"layers": [{"type": "relu"}]}).seed, int)  # a fresh seed is recorded


# ---- building ---------------------------------------------------------------------------


def test_build_names_shapes_and_seeded_weights():
    model, loss_fn, optimizer = build(TUTORIAL)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(loss_fn, nn.MSELoss) and loss_fn.reduction == "sum"
    assert isinstance(optimizer, engine.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.001
    engine.manual_seed(0)
    by_hand = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3))
    for (_, mine), (_, theirs) in zip(model.named_parameters(), by_hand.named_parameters()):
        np.testing.assert_array_equal(mine.detach().numpy(), theirs.detach().numpy())


def test_build_does_not_touch_the_default_generator():
    engine.manual_seed(9)
    expected = engine.rand(3).numpy()
    engine.manual_seed(9)
    build(TUTORIAL)
    np.testing.assert_array_equal(engine.rand(3).numpy(), expected)


@pytest.mark.parametrize("layer", [{"type": t} for t in ("relu", "tanh", "sigmoid", "gelu", "softmax", "identity")]
                         + [{"type": "dropout", "p": 0.1}, {"type": "gelu", "approximate": "tanh"}])
def test_every_layer_type_builds_and_runs(layer):
    spec = spec_with(layers=[{"type": "linear", "in_features": 20, "out_features": 8}, layer,
                             {"type": "linear", "in_features": 8, "out_features": 3}])
    trainable = TrainableModel(spec)
    x, y = data()
    output, loss = trainable.forward(x, y)
    assert tuple(output.shape) == (12, 3) and loss > 0


def test_flatten_and_float64():
    spec = spec_with(layers=[{"type": "flatten"}, {"type": "linear", "in_features": 20, "out_features": 3}],
                     dtype="float64")
    trainable = TrainableModel(spec)
    output, _ = trainable.forward(np.ones((2, 4, 5)))
    assert output.dtype == engine.float64 and tuple(output.shape) == (2, 3)


@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "bce_with_logits"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_training_lowers_the_loss(loss, optimizer):
    lr = {"sgd": 0.05, "adagrad": 0.1}.get(optimizer, 0.01)
    spec = spec_with(loss={"type": loss}, optimizer={"type": optimizer, "lr": lr})
    trainable = TrainableModel(spec)
    x, y = data()
    if loss == "bce_with_logits":
        y = (y > 0).astype(np.float64)
    losses = trainable.train(x, y, steps=25)
    assert len(losses) == 25 and trainable.steps == 25
    assert losses[-1] < losses[0]


def test_cross_entropy_with_class_indices_and_batches():
    spec = spec_with(loss={"type": "cross_entropy"}, optimizer={"type": "adam", "lr": 0.05})
    trainable = TrainableModel(spec)
    x, _ = data()
    labels = [0, 1, 2] * 4
    losses = trainable.train(x, labels, steps=30, batch_size=5)
    assert losses[-1] < losses[0]
    output, loss = trainable.forward(x, labels)
    assert loss == pytest.approx(nn.functional.cross_entropy(output, engine.tensor(labels)).item())


def test_forward_records_no_graph_and_backward_accumulates():
    trainable = TrainableModel(TUTORIAL)
    x, y = data()
    output, loss = trainable.forward(x, y)
    assert output.grad_fn is None and not output.requires_grad
    assert all(g is None for g in trainable.named_grads().values())
    first = trainable.backward(x, y)
    assert first == pytest.approx(loss, rel=1e-6)
    once = trainable.named_grads()
    trainable.backward(x, y)
    twice = trainable.named_grads()
    for name in once:
        np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-6)
    before = trainable.named_parameters()
    assert trainable.step() == 1
    after = trainable.named_parameters()
    lr = np.float64(np.float32(0.001))
    for name in before:
        # w - lr * g, exact in float64; fused into one rounding or not (the BLAS kernel decides),
        # the float32 result is within one ulp of |w| + |lr g| of it.
        exact = before[name].astype(np.float64) - lr * twice[name]
        assert_within_ulps(after[name], exact, 1, scale=np.abs(before[name]) + np.abs(lr * twice[name]), err_msg=name)
    trainable.zero_grad(set_to_none=False)
    assert all((g == 0).all() for g in trainable.named_grads().values())
    trainable.zero_grad()
    assert all(g is None for g in trainable.named_grads().values())


def test_info_describes_the_model():
    trainable = TrainableModel(TUTORIAL)
    info = trainable.info()
    assert info["parameters"] == {"0.weight": [8, 20], "0.bias": [8], "2.weight": [3, 8], "2.bias": [3]}
    assert info["parameter_count"] == 8 * 21 + 3 * 9 == ModelSpec.parse(TUTORIAL).parameter_count()
    assert info["step"] == 0 and info["lr"] == [0.001]
    json.dumps(info)


def test_input_width_is_checked():
    trainable = TrainableModel(TUTORIAL)
    with pytest.raises(ValueError, match="expects 20 features"):
        trainable.forward(np.ones((2, 19)))
    with pytest.raises(ValueError, match=r"target has shape \[2\]; the model's output has shape \[2, 3\]"):
        trainable.backward(np.ones((2, 20)), np.ones(2))
    with pytest.raises(ValueError, match="same number of rows"):
        trainable.train(np.ones((4, 20)), np.ones((3, 3)), steps=1)


@pytest.mark.host_only  # it takes cupy away itself
def test_model_spec_on_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(engine.backend, "cupy", None)
    spec = {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}], "device": "cuda", "seed": 0}
    assert ModelSpec.parse(spec).as_dict()["device"] == "cuda"
    with pytest.raises(RuntimeError, match="cupy is not installed"):
        build(spec)
    with pytest.raises(SpecError, match="device must be one of"):
        ModelSpec.parse({**spec, "device": "tpu"})
    assert "device" not in ModelSpec.parse({**spec, "device": "cpu"}).as_dict()


def test_scheduler_runs_with_each_step():
    trainable = TrainableModel(spec_with(scheduler={"type": "step", "step_size": 2, "gamma": 0.5}))
    x, y = data()
    trainable.train(x, y, steps=5)
    assert trainable.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * 0.25)


# ---- state round trip ----------------------------------------------------------------------

RICH = spec_with(
    layers=[{"type": "linear", "in_features": 20, "out_features": 8}, {"type": "dropout", "p": 0.3},
            {"type": "tanh"}, {"type": "linear", "in_features": 8, "out_features": 3}],
    optimizer={"type": "adam", "lr": 0.01, "amsgrad": True},
    scheduler={"type": "cosine", "T_max": 4},
)


def _assert_same_state(a, b):
    assert a["step"] == b["step"] and a["spec"] == b["spec"]
    for section in ("parameters", "grads"):
        assert a[section].keys() == b[section].keys()
        for name in a[section]:
            if a[section][name] is None:
                assert b[section][name] is None
            else:
                assert a[section][name].dtype == b[section][name].dtype
                np.testing.assert_array_equal(a[section][name], b[section][name])
    for name, entries in a["optimizer"]["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][name][key])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["scheduler"] == b["scheduler"] and a["generator"] == b["generator"]


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@pytest.mark.parametrize("through_json", [False, True])
def test_state_round_trip_is_exact_and_training_continues_identically(through_json):
    original = TrainableModel(RICH)
    x, y = data()
    original.train(x, y, steps=3, batch_size=5)
    original.backward(x[:4], y[:4])  # leave accumulated grads in the state
    state = original.state()
    if through_json:
        state = json.loads(json.dumps(_jsonable(state)))
    restored = TrainableModel.from_state(state)
    _assert_same_state(original.state(), restored.state())
    # Both continue the same way, dropout masks included (the generator state travels too).
    original.step()
    restored.step()
    np.testing.assert_array_equal(original.train(x, y, 4, 5), restored.train(x, y, 4, 5))
    _assert_same_state(original.state(), restored.state())


def test_state_is_a_copy():
    trainable = TrainableModel(TUTORIAL)
    state = trainable.state()
    state["parameters"]["0.weight"][...] = 0
    assert not (trainable.named_parameters()["0.weight"] == 0).all()


def test_state_errors():
    trainable = TrainableModel(TUTORIAL)
    state = trainable.state()
    with pytest.raises(ValueError, match="unknown state format"):
        TrainableModel.from_state({**state, "format": "other/9"})
    bad = copy.deepcopy(state)
    bad["parameters"]["0.weight"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"parameters\.0\.weight: shape \[2, 2\]"):
        TrainableModel.from_state(bad)
    bad = copy.deepcopy(state)
    bad["parameters"]["9.weight"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"unknown parameter '9\.weight'"):
        TrainableModel.from_state(bad)
