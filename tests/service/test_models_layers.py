"""/v1/models with convolution, pooling, normalization and embedding layers (in-process):
created with PyTorch's parameter names, trained like the in-process model, batch norm's running
statistics kept in the store and the exported state, and bad shapes as problems naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from frontends.model_spec import TrainableModel
from service.app import create_app
from service.config import Settings
from tests.floats import assert_close_up_to_summation_order

CNN = {"layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1},
                  {"type": "batch_norm", "num_features": 3}, {"type": "relu"},
                  {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
                  {"type": "linear", "in_features": 3 * 3 * 3, "out_features": 2}],
       "loss": {"type": "cross_entropy"}, "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 3}
BAG_OF_WORDS = {"layers": [{"type": "embedding", "num_embeddings": 6, "embedding_dim": 4, "padding_idx": 0},
                           {"type": "layer_norm", "normalized_shape": 4}, {"type": "flatten"},
                           {"type": "linear", "in_features": 12, "out_features": 1}],
                "seed": 1}


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(data_dir=str(tmp_path)))) as test_client:
        yield test_client


def images(rows=6):
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, 1, 6, 6)).astype(np.float32), (np.arange(rows) % 2).tolist()


def problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_cnn_is_created_with_pytorchs_names_and_trains_as_in_process(client):
    body = client.post("/v1/models", json=CNN).json()
    assert body["parameters"] == {"0.weight": [3, 1, 3, 3], "0.bias": [3], "1.weight": [3], "1.bias": [3],
                                  "5.weight": [2, 27], "5.bias": [2]}
    assert body["parameter_count"] == 27 + 3 + 3 + 3 + 54 + 2
    x, y = images()
    trained = client.post(f"/v1/models/{body['id']}/train",
                          json={"inputs": x.tolist(), "targets": y, "steps": 4, "batch_size": 3})
    assert trained.status_code == 200, trained.text
    local = TrainableModel(CNN)
    expected = local.train(x, np.array(y), steps=4, batch_size=3)
    assert_close_up_to_summation_order(np.array(trained.json()["losses"]), np.array(expected))
    state = client.get(f"/v1/models/{body['id']}/state").json()
    assert state["buffers"]["1.num_batches_tracked"]["data"] == [4]
    running_mean = np.array(state["buffers"]["1.running_mean"]["data"], dtype=np.float32)
    assert_close_up_to_summation_order(running_mean, local.model[1].running_mean.numpy())
    assert np.any(running_mean != 0)  # four batches moved it


def test_running_statistics_survive_export_and_import(client):
    source = client.post("/v1/models", json=CNN).json()["id"]
    x, y = images()
    client.post(f"/v1/models/{source}/train", json={"inputs": x.tolist(), "targets": y, "steps": 2})
    exported = client.get(f"/v1/models/{source}/state").json()
    target = client.post("/v1/models", json=CNN).json()["id"]
    assert client.put(f"/v1/models/{target}/state", json=exported).status_code == 200
    outputs = [client.post(f"/v1/models/{m}/forward", json={"input": x[:2].tolist()}).json()["output"]["data"]
               for m in (source, target)]
    assert outputs[0] == outputs[1]  # eval mode reads the running statistics: imported, not reset


def test_embedding_model_takes_class_indices(client):
    model = client.post("/v1/models", json=BAG_OF_WORDS).json()["id"]
    trained = client.post(f"/v1/models/{model}/train",
                          json={"inputs": [[1, 2, 0], [3, 5, 4]], "targets": [[1.0], [-1.0]], "steps": 3})
    assert trained.status_code == 200, trained.text
    losses = trained.json()["losses"]
    assert losses[-1] < losses[0]
    grads = client.get(f"/v1/models/{model}/parameters").json()["grads"]["0.weight"]["data"]
    assert not any(np.array(grads).reshape(6, 4)[0])  # the padding row gets no gradient


@pytest.mark.parametrize("spec, body, layer, words", [
    (CNN, {"input": np.zeros((2, 3, 6, 6)).tolist()}, "layers[0] (conv2d)", ["(N, 1, H, W)", "[2, 3, 6, 6]"]),
    (CNN, {"input": np.zeros((2, 1, 8, 8)).tolist()}, "layers[5] (linear)", ["27 features", "[2, 48]"]),
    (CNN, {"input": np.zeros((1, 1, 1, 1)).tolist()}, "layers[3] (max_pool2d)", ["[1, 3, 1, 1]", "kernel"]),
    (BAG_OF_WORDS, {"input": [[1, 6, 2]]}, "layers[0] (embedding)", ["[1, 6]", "num_embeddings is 6"]),
    (BAG_OF_WORDS, {"input": [[1, 2]]}, "layers[3] (linear)", ["12 features", "[1, 8]"]),
])
def test_inputs_that_do_not_fit_name_the_layer_and_the_shapes(client, spec, body, layer, words):
    model = client.post("/v1/models", json=spec).json()["id"]
    detail = problem(client.post(f"/v1/models/{model}/forward", json=body), 400)["detail"]
    assert detail.startswith(layer), detail
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("layers, layer, words", [
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
      {"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": 3}],
     "layers[1] (conv2d)", ["in_channels 2"]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
      {"type": "batch_norm", "num_features": 5}], "layers[1] (batch_norm)", ["num_features 5", "4 features"]),
    ([{"type": "linear", "in_features": 2, "out_features": 3}, {"type": "embedding", "num_embeddings": 4,
                                                                 "embedding_dim": 2}], "layers[1] (embedding)",
     ["first layer"]),
    ([{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": [3, 3, 3]}], "layers[0] (conv2d)",
     ["kernel_size"]),
    ([{"type": "max_pool2d", "kernel_size": 2, "padding": 2}], "layers[0] (max_pool2d)", ["padding 2"]),
])
def test_bad_layer_specs_are_422_naming_the_layer(client, layers, layer, words):
    body = problem(client.post("/v1/models", json={"layers": layers}), 422)
    assert body["layer"] == layer
    for word in words:
        assert word in body["detail"], body["detail"]
